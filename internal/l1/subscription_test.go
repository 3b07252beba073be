package l1

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// The shared subscription against a real redis-server: one pub/sub
// connection per client whatever the number of members and channels,
// messages dispatched by channel, a drop told to every member, and the
// connection gone with the last member.

// member counts what one Handler was told.
type member struct {
	subscribed, dropped, messages, leases atomic.Int64
	last                                  atomic.Value // string: the last payload
}

func (m *member) handler() Handler {
	return Handler{
		OnSubscribed: func() { m.subscribed.Add(1) },
		OnDrop:       func() { m.dropped.Add(1) },
		OnLease:      func(time.Time) { m.leases.Add(1) },
		OnMessage: func(p string) {
			m.messages.Add(1)
			m.last.Store(p)
		},
		ReplyPrefix: "ack:", // the Confirmer's Prefix in confirm_test.go
	}
}

const waitLimit = 10 * time.Second

// waitUntil waits until cond holds, for at most waitLimit.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	redistest.WaitFor(t, waitLimit, what, cond)
}

// pubsubConns returns the number of pub/sub connections the server has.
func pubsubConns(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	out := strings.TrimSpace(srv.CLI(t, "CLIENT", "LIST", "TYPE", "pubsub"))
	if out == "" {
		return 0
	}
	return len(strings.Split(out, "\n"))
}

// numsub returns PUBSUB NUMSUB of channel.
func numsub(t *testing.T, srv *redistest.Server, channel string) string {
	t.Helper()
	return srv.CLI(t, "PUBSUB", "NUMSUB", channel)
}

// joinTen joins ten members on one client, two per channel c0..c4, and
// waits until each is subscribed.
func joinTen(t *testing.T, srv *redistest.Server) (members []*member, leaves []func()) {
	t.Helper()
	rdb := srv.Client(t)
	for i := range 10 {
		m := &member{}
		members = append(members, m)
		leaves = append(leaves, Join(rdb, fmt.Sprintf("c%d", i/2), m.handler()))
	}
	t.Cleanup(func() {
		for _, l := range leaves {
			l()
		}
	})
	waitUntil(t, "every member subscribed", func() bool {
		for _, m := range members {
			if m.subscribed.Load() == 0 {
				return false
			}
		}
		return true
	})
	return members, leaves
}

func TestSubscriptionOneConnectionPerClient(t *testing.T) {
	srv := redistest.Start(t)
	members, _ := joinTen(t, srv)
	if n := pubsubConns(t, srv); n != 1 {
		t.Errorf("CLIENT LIST TYPE pubsub shows %d connections for ten members on one client, want 1", n)
	}
	for c := range 5 {
		ch := fmt.Sprintf("c%d", c)
		if got, want := numsub(t, srv, ch), "["+ch+" 1]"; got != want {
			t.Errorf("PUBSUB NUMSUB %s = %s, want %s", ch, got, want)
		}
	}
	// A message reaches the two members of its channel, and no other.
	srv.CLI(t, "PUBLISH", "c3", "hello")
	waitUntil(t, "c3's members get the message", func() bool {
		return members[6].messages.Load() == 1 && members[7].messages.Load() == 1
	})
	time.Sleep(50 * time.Millisecond) // time for a wrong delivery to show
	for i, m := range members {
		want := int64(0)
		if i/2 == 3 {
			want = 1
		}
		if got := m.messages.Load(); got != want {
			t.Errorf("member %d (channel c%d) got %d messages, want %d", i, i/2, got, want)
		}
	}
	if p := members[6].last.Load(); p != "hello" {
		t.Errorf("member 6 got payload %v, want hello", p)
	}
}

func TestSubscriptionDropReachesEveryMember(t *testing.T) {
	srv := redistest.Start(t)
	members, _ := joinTen(t, srv)
	srv.CLI(t, "CLIENT", "KILL", "TYPE", "pubsub")
	waitUntil(t, "every member told of the drop, then subscribed again", func() bool {
		for _, m := range members {
			if m.dropped.Load() == 0 || m.subscribed.Load() < 2 {
				return false
			}
		}
		return true
	})
	if n := pubsubConns(t, srv); n != 1 {
		t.Errorf("CLIENT LIST TYPE pubsub shows %d connections after the resubscription, want 1", n)
	}
	for c := range 5 {
		srv.CLI(t, "PUBLISH", fmt.Sprintf("c%d", c), "after")
	}
	waitUntil(t, "every member gets a message on the new connection", func() bool {
		for _, m := range members {
			if m.messages.Load() != 1 {
				return false
			}
		}
		return true
	})
}

func TestSubscriptionLastLeaveCloses(t *testing.T) {
	srv := redistest.Start(t)
	members, leaves := joinTen(t, srv)
	for _, l := range leaves[:9] {
		l()
	}
	// c0..c3 lost their members: unsubscribed; c4 keeps member 9.
	waitUntil(t, "channels without members unsubscribed", func() bool {
		return numsub(t, srv, "c0") == "[c0 0]" && numsub(t, srv, "c3") == "[c3 0]"
	})
	if got := numsub(t, srv, "c4"); got != "[c4 1]" {
		t.Errorf("PUBSUB NUMSUB c4 = %s with member 9 left, want [c4 1]", got)
	}
	srv.CLI(t, "PUBLISH", "c4", "x")
	waitUntil(t, "member 9 gets a message after nine left", func() bool { return members[9].messages.Load() == 1 })
	if n := members[8].messages.Load(); n != 0 {
		t.Errorf("member 8 got %d messages after it left, want 0", n)
	}

	leaves[9]()
	waitUntil(t, "no pub/sub connection after the last leave", func() bool { return pubsubConns(t, srv) == 0 })
	// A new member after the last leave gets a new subscription.
	m := &member{}
	leave := Join(srv.Client(t), "c4", m.handler())
	defer leave()
	waitUntil(t, "a new member subscribed", func() bool { return m.subscribed.Load() == 1 })
}

// TestSubscriptionJoinAfterSubscribed: a member that joins a channel
// already subscribed is told so at once, and gets the next message.
func TestSubscriptionJoinAfterSubscribed(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	a, b := &member{}, &member{}
	defer Join(rdb, "ch", a.handler())()
	waitUntil(t, "a subscribed", func() bool { return a.subscribed.Load() == 1 })
	defer Join(rdb, "ch", b.handler())()
	if n := b.subscribed.Load(); n != 1 {
		t.Errorf("b was told %d times that its channel is subscribed when it joined, want 1", n)
	}
	ctx := context.Background()
	if err := rdb.Publish(ctx, "ch", "m").Err(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "both get the message", func() bool { return a.messages.Load() == 1 && b.messages.Load() == 1 })
}

// panicDials panics in the first n dials of a client.
type panicDials struct{ n *atomic.Int64 }

func (h panicDials) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if h.n.Add(-1) >= 0 {
			panic("dial hook")
		}
		return next(ctx, network, addr)
	}
}
func (panicDials) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (panicDials) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestSubscriptionSurvivesPanickingDialHook: a dial hook that panics
// fails a subscription (every member is told of the panic and of the
// drop), never the process, and a later dial subscribes.
func TestSubscriptionSurvivesPanickingDialHook(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	var n atomic.Int64
	n.Store(2)
	rdb.AddHook(panicDials{&n})
	m := &member{}
	var panics atomic.Int64
	h := m.handler()
	h.OnPanic = func(any) { panics.Add(1) }
	defer Join(rdb, "ch", h)()
	waitUntil(t, "subscribed after two panicking dials", func() bool { return m.subscribed.Load() == 1 })
	if p, d := panics.Load(), m.dropped.Load(); p != 2 || d != 2 {
		t.Errorf("member told of %d panics and %d drops, want 2 and 2", p, d)
	}
}

// TestSubscriptionFailedSubscribeIsADrop: a SUBSCRIBE for a new member
// that fails on a dead connection while the subscription is busy (here,
// resuming a channel) makes go-redis redial inside the PubSub, subscribed
// to the channels it knew before that SUBSCRIBE only. The subscription
// must take that for a drop: every member is told, and the new member's
// channel is subscribed on the next connection, not never.
func TestSubscriptionFailedSubscribeIsADrop(t *testing.T) {
	srv := redistest.Start(t)
	sub := srv.Client(t)
	var hold atomic.Bool
	held, release := make(chan struct{}, 1), make(chan struct{})
	sub.AddHook(redistest.RoundTrips(func(cmds []redis.Cmder) {
		// The resume's round trip: its lease renewals, then XINFO.
		if slices.ContainsFunc(cmds, func(c redis.Cmder) bool { return c.Name() == "xinfo" }) && hold.CompareAndSwap(true, false) {
			held <- struct{}{}
			<-release // the subscription's receive loop waits here
		}
	}))
	a := &member{}
	t.Cleanup(Join(sub, "a", a.handler()))
	waitUntil(t, "a subscribed", func() bool { return a.subscribed.Load() == 1 })

	hold.Store(true)
	b := &member{}
	t.Cleanup(Join(sub, "b", b.handler()))
	select {
	case <-held: // b's confirmation is being resumed
	case <-time.After(waitLimit):
		t.Fatal("the resume of b never read its stream")
	}
	srv.CLI(t, "CLIENT", "KILL", "TYPE", "pubsub")
	// Two SUBSCRIBEs on the dead connection: the first write may still
	// succeed (the server's reset comes back after it), the second fails.
	late := make([]*member, 4)
	for i := range late {
		time.Sleep(50 * time.Millisecond)
		late[i] = &member{}
		t.Cleanup(Join(sub, fmt.Sprintf("late%d", i), late[i].handler()))
	}
	time.Sleep(100 * time.Millisecond)
	close(release)

	waitUntil(t, "a told of the drop", func() bool { return a.dropped.Load() >= 1 })
	for i, m := range late {
		waitUntil(t, fmt.Sprintf("late%d subscribed", i), func() bool { return m.subscribed.Load() >= 1 })
	}
}
