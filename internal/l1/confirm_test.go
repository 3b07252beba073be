package l1

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestEncodeAsking: a message asking for confirmations decodes to the
// sender's origin and keys, as an earlier receiver reads it too (its
// origin never equals the receiver's own), and names its reply key; one
// that does not ask names none.
func TestEncodeAsking(t *testing.T) {
	keys := []string{"ca:{1}", "ca:{2}"}
	msg := string(EncodeAsking("0123456789abcdef.", "ca:ack:0123456789abcdef.7", keys))
	origin, got, ok := Decode(msg)
	if !ok || origin != "0123456789abcdef." || !slices.Equal(got, keys) {
		t.Errorf("Decode(EncodeAsking) = %q, %q, %v; want the origin and keys back", origin, got, ok)
	}
	if r := askedReply(msg); r != "ca:ack:0123456789abcdef.7" {
		t.Errorf("askedReply(EncodeAsking) = %q, want the reply key", r)
	}
	if r := askedReply(string(Encode("o.", keys))); r != "" {
		t.Errorf("askedReply(Encode) = %q, want none", r)
	}
}

// direct is a Confirmer's Call without a guard.
func direct(ctx context.Context, _ string, _ time.Duration, fn func(context.Context) error) error {
	return fn(ctx)
}

// TestSubscriptionConfirmsAfterMembers: two subscriptions (two clients),
// one with two members of the channel, each leased in the channel's
// registry; a message asking for confirmations names both as live, each
// confirms once after handing it to all its members, and the wait ends
// well before its timeout. A plain SUBSCRIBE (like an earlier version)
// keeps no lease and is not waited for; a lease whose subscription
// never confirms makes the wait fail naming one.
func TestSubscriptionConfirmsAfterMembers(t *testing.T) {
	srv := redistest.Start(t)
	m1, m2, m3 := &member{}, &member{}, &member{}
	r1, r2 := srv.Client(t), srv.Client(t)
	defer Join(r1, "ch", m1.handler())()
	defer Join(r1, "ch", m2.handler())()
	defer Join(r2, "ch", m3.handler())()
	waitUntil(t, "all leased", func() bool {
		return m1.leases.Load() >= 1 && m2.leases.Load() >= 1 && m3.leases.Load() >= 1
	})
	pub := srv.Client(t)
	ctx := context.Background()
	c := &Confirmer{Client: pub, Prefix: "ack:", Timeout: 5 * time.Second, Slice: 100 * time.Millisecond, Call: direct}
	send := func() ([]string, string) {
		reply := c.Reply()
		live, err := PublishLiveResult(PublishLive.Run(ctx, pub, []string{"ch", LiveKey("ch")}, PublishArgs("ch", EncodeAsking("other.", reply, []string{"k"}))...).Result())
		if err != nil {
			t.Fatalf("PublishLive: %v", err)
		}
		return live, reply
	}
	live, reply := send()
	if len(live) != 2 {
		t.Fatalf("PublishLive named %d live subscriptions (%q), want 2", len(live), live)
	}
	start := time.Now()
	if err := c.Wait(ctx, reply, live); err != nil {
		t.Fatalf("Wait = %v, want nil", err)
	}
	if took := time.Since(start); took > 4*time.Second {
		t.Errorf("Wait took %v, want well under its 5s timeout", took)
	}
	for i, m := range []*member{m1, m2, m3} {
		if got := m.messages.Load(); got != 1 {
			t.Errorf("member %d got %d messages before the wait ended, want 1", i+1, got)
		}
	}

	ps := srv.Client(t).Subscribe(ctx, "ch")
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	if live, reply = send(); len(live) != 2 {
		t.Fatalf("with a plain SUBSCRIBE beside them, PublishLive named %d live subscriptions, want 2", len(live))
	}
	if err := c.Wait(ctx, reply, live); err != nil {
		t.Fatalf("Wait with a plain SUBSCRIBE beside them = %v, want nil", err)
	}
	srv.CLI(t, "ZADD", LiveKey("ch"), "99999999999999", "ghost")
	c.Timeout = 300 * time.Millisecond
	live, reply = send()
	err := c.Wait(ctx, reply, live)
	if !errors.Is(err, ErrNotConfirmed) || !strings.Contains(err.Error(), "1 of 3 instances did not confirm") {
		t.Errorf("Wait with a live subscription that never confirms = %v, want ErrNotConfirmed naming 1 of 3", err)
	}
}
