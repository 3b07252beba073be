package l1

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// The feed against a real redis-server: a subscriber whose connection
// dropped is handed exactly the messages sent meanwhile, from the stream,
// and told to resume; one that cannot know what it missed (the stream
// trimmed past its last message, or gone) is told to start afresh. The
// subscriber connects as an ACL user that the tests stop from
// subscribing again, so that messages are sent while it is surely
// disconnected.

// feedSetup starts a server, a subscriber member on channel "ch" over a
// client of user "sub", and a publishing client, and waits until the
// member is subscribed and has received one message (so that its last ID
// is known). block stops "sub" from subscribing and kills its pub/sub
// connection; unblock lets it subscribe again.
func feedSetup(t *testing.T) (m *member, resumed func() int64, publish func(keys ...string), srv *redistest.Server, block, unblock func()) {
	t.Helper()
	srv = redistest.Start(t)
	srv.CLI(t, "ACL", "SETUSER", "sub", "on", "nopass", "~*", "&*", "+@all")
	// nopass takes any password; without one go-redis sends no AUTH and
	// the client is the default user, whom block does not stop.
	sub := redis.NewClient(&redis.Options{Addr: srv.Addr(), Username: "sub", Password: "any", MaxRetries: -1})
	t.Cleanup(func() { _ = sub.Close() })
	pub := srv.Client(t)
	m = &member{}
	var n atomic.Int64
	h := m.handler()
	h.OnResumed = func() { n.Add(1) }
	leave := Join(sub, "ch", h)
	t.Cleanup(leave)
	waitUntil(t, "subscribed", func() bool { return m.subscribed.Load() == 1 })
	if out := srv.CLI(t, "CLIENT", "LIST", "TYPE", "pubsub"); !strings.Contains(out, " user=sub ") {
		t.Fatalf("CLIENT LIST TYPE pubsub = %q, want a connection of user sub: block would not stop it", out)
	}
	publish = func(keys ...string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := Publish.Run(ctx, pub, []string{"ch"}, PublishArgs("ch", Encode("other", keys))...).Err(); err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	publish("k0")
	waitUntil(t, "the first message", func() bool { return m.messages.Load() == 1 })
	block = func() {
		srv.CLI(t, "ACL", "SETUSER", "sub", "-subscribe")
		srv.CLI(t, "CLIENT", "KILL", "TYPE", "pubsub")
		waitUntil(t, "the drop", func() bool { return m.dropped.Load() >= 1 })
	}
	unblock = func() { srv.CLI(t, "ACL", "SETUSER", "sub", "+subscribe") }
	return m, n.Load, publish, srv, block, unblock
}

// TestFeedReplaysMissedMessages: the three messages sent while the
// subscriber could not subscribe reach it, in order, from the stream, and
// it is told to resume, not to start afresh.
func TestFeedReplaysMissedMessages(t *testing.T) {
	m, resumed, publish, _, block, unblock := feedSetup(t)
	block()
	publish("k1")
	publish("k2")
	publish("k3")
	time.Sleep(100 * time.Millisecond)
	if got := m.messages.Load(); got != 1 {
		t.Fatalf("messages while the subscriber could not subscribe = %d, want 1 (the test relies on them being missed)", got)
	}
	unblock()
	waitUntil(t, "resumed", func() bool { return resumed() == 1 })
	if got := m.messages.Load(); got != 4 {
		t.Fatalf("messages after the resume = %d, want 4 (1 + the 3 missed)", got)
	}
	if _, keys, ok := Decode(m.last.Load().(string)); !ok || len(keys) != 1 || keys[0] != "k3" {
		t.Fatalf("last message names %v (ok %v), want [k3]: the missed messages are handed over in order", keys, ok)
	}
	if got := m.subscribed.Load(); got != 1 {
		t.Fatalf("OnSubscribed ran %d times, want 1 (the first subscription only)", got)
	}
	// Messages flow live again, and carry on the ID.
	publish("k4")
	waitUntil(t, "a live message", func() bool { return m.messages.Load() == 5 })
}

// TestFeedBehindTheLogStartsAfresh: when the stream no longer holds what
// the subscriber missed (trimmed past its last message, or deleted), it is
// told to start afresh (OnSubscribed), not to resume.
func TestFeedBehindTheLogStartsAfresh(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose []string
	}{
		{"trimmed", []string{"XTRIM", "ch", "MAXLEN", "0"}},
		{"deleted", []string{"DEL", "ch"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, resumed, publish, srv, block, unblock := feedSetup(t)
			block()
			publish("k1")
			srv.CLI(t, tc.lose...)
			unblock()
			waitUntil(t, "subscribed afresh", func() bool { return m.subscribed.Load() == 2 })
			if got := resumed(); got != 0 {
				t.Fatalf("resumed %d times, want 0: the missed message is gone from the stream", got)
			}
		})
	}
}

// TestUnwrap: published messages carry their stream ID; messages of an
// earlier version carry none and pass through; a broken ID is unreadable.
func TestUnwrap(t *testing.T) {
	msg := string(Encode("o", []string{"k"}))
	for _, tc := range []struct {
		in, id, msg string
		ok          bool
	}{
		{wrapPrefix + "\x031-2" + msg, "1-2", msg, true},
		{msg, "", msg, true},
		{wrapPrefix + "\x03x-2" + msg, "", "", false},
		{wrapPrefix + "\x09" + "1-2", "", "", false},
	} {
		id, m, ok := Unwrap(tc.in)
		if id != tc.id || m != tc.msg || ok != tc.ok {
			t.Errorf("Unwrap(%q) = %q, %q, %v; want %q, %q, %v", tc.in, id, m, ok, tc.id, tc.msg, tc.ok)
		}
	}
}

// TestResumeManyChannelsOneRoundTrip: a subscription of 10 channels (one
// per Cache prefix) that dropped catches up all 10 streams in one round
// trip once it is subscribed again, not one per channel (on a slow Redis
// that would hold every channel's resume up 10 times longer), and every
// channel resumes with the message it missed.
func TestResumeManyChannelsOneRoundTrip(t *testing.T) {
	srv := redistest.Start(t)
	sub := srv.Client(t)
	trips := &streamTrips{}
	sub.AddHook(redistest.RoundTrips(trips.see))
	pub := srv.Client(t)
	const channels = 10
	members := make([]*member, channels)
	var resumed atomic.Int64
	publish := func(ch string, key string) {
		t.Helper()
		if err := Publish.Run(context.Background(), pub, []string{ch}, PublishArgs(ch, Encode("other", []string{key}))...).Err(); err != nil {
			t.Fatalf("Publish on %s: %v", ch, err)
		}
	}
	for i := range members {
		ch := "p" + strconv.Itoa(i) + ":invalidations"
		members[i] = &member{}
		h := members[i].handler()
		h.OnResumed = func() { resumed.Add(1) }
		t.Cleanup(Join(sub, ch, h))
	}
	for i, m := range members {
		waitUntil(t, "subscribed", func() bool { return m.subscribed.Load() == 1 })
		publish("p"+strconv.Itoa(i)+":invalidations", "k0") // its last ID is known
		waitUntil(t, "the first message", func() bool { return m.messages.Load() == 1 })
	}
	before := trips.count.Load()
	srv.CLI(t, "CLIENT", "KILL", "TYPE", "pubsub")
	waitUntil(t, "all 10 channels resumed", func() bool { return resumed.Load() == channels })
	if n := trips.count.Load() - before; n != 1 {
		t.Errorf("the resume of %d channels read their streams in %d round trips, want 1", channels, n)
	}
	for i, m := range members {
		if m.subscribed.Load() != 1 {
			t.Errorf("channel %d: OnSubscribed ran %d times, want 1: it resumes", i, m.subscribed.Load())
		}
	}
}

// streamTrips counts, installed as redistest.RoundTrips(h.see), the
// round trips reading invalidation streams (XINFO STREAM).
type streamTrips struct{ count atomic.Int64 }

func (h *streamTrips) see(cmds []redis.Cmder) {
	for _, c := range cmds {
		if c.Name() == "xinfo" {
			h.count.Add(1)
			return
		}
	}
}
