package cacheaside_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// The tests in this file hold a Redis reply in a go-redis hook until an
// invalidation has happened, then deliver it: the value read before the
// invalidation must not end up in the reader's L1, from which a read-first
// Get (WithLocalFirst) would serve it until the L1 TTL. Each covers one
// path that writes L1 after a Redis read: Get, GetMany, WithLocalPrefill,
// an Invalidate on the same process, and a read that spans a dropped and
// re-established backplane subscription.

// replyHold is a go-redis hook that holds one reply. Once armed, the next
// command named name runs on the server as usual; then its caller waits
// until release, so that the reply is delivered late.
type replyHold struct {
	name    string
	seen    atomic.Int64 // commands named name sent so far
	armed   atomic.Bool
	ran     chan struct{} // closed when the held command has run
	release chan struct{}
	once    sync.Once
}

func newReplyHold(name string) *replyHold {
	return &replyHold{name: name, ran: make(chan struct{}), release: make(chan struct{})}
}

func (h *replyHold) arm()    { h.armed.Store(true) }
func (h *replyHold) unhold() { h.once.Do(func() { close(h.release) }) }

func (h *replyHold) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *replyHold) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

func (h *replyHold) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == h.name {
			h.seen.Add(1)
		}
		err := next(ctx, cmd)
		if cmd.Name() == h.name && h.armed.CompareAndSwap(true, false) {
			close(h.ran)
			select {
			case <-h.release:
			case <-ctx.Done():
			}
		}
		return err
	}
}

// holdClient returns a client to srv with h installed, closed when the
// test ends; the reply is released first, so that nothing waits on it.
func holdClient(t *testing.T, srv *redistest.Server, h *replyHold) *redis.Client {
	t.Helper()
	rdb := srv.Client(t)
	rdb.AddHook(h)
	t.Cleanup(h.unhold)
	return rdb
}

// versioned returns a loader whose every value is the current version.
func versioned() (*atomic.Int64, cacheaside.LoadFunc[string, int64]) {
	var version atomic.Int64
	version.Store(1)
	return &version, func(ctx context.Context, k string) (int64, error) { return version.Load(), nil }
}

// localFirst is the L1 configuration of every test in this file.
var localFirst = []cacheaside.Option{cacheaside.WithLocalCache(100, time.Minute), cacheaside.WithLocalFirst(true)}

// waitListening waits until both Caches of a test, on the default prefix,
// are subscribed to the invalidation channel and to has read the
// confirmation of its subscription: an invalidation of a probe key by from
// reaches to. Only then do read-first Gets on to trust what they read into
// L1. It returns to's count of applied invalidations.
func waitListening[K comparable, V any](t *testing.T, srv *redistest.Server, from, to *cacheaside.Cache[K, V], probe K) uint64 {
	t.Helper()
	return waitListeningOn(t, srv, "ca:invalidations", from, to, probe)
}

// waitListeningOn is waitListening for Caches whose invalidation channel
// is channel (their prefix + "invalidations"). Two subscribers of another
// channel do not do: an invalidation published before to subscribed never
// reaches it.
func waitListeningOn[K comparable, V any](t *testing.T, srv *redistest.Server, channel string, from, to *cacheaside.Cache[K, V], probe K) uint64 {
	t.Helper()
	waitSubscribedTo(t, srv, channel, 2)
	before := to.Stats().LocalInvalidations
	if err := from.Invalidate(context.Background(), probe); err != nil {
		t.Fatalf("Invalidate(%v) = %v", probe, err)
	}
	return waitApplied(t, to, before)
}

// waitApplied waits until c has applied an invalidation from another
// process beyond the first before, and returns its new count.
func waitApplied[K comparable, V any](t *testing.T, c *cacheaside.Cache[K, V], before uint64) uint64 {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		if n := c.Stats().LocalInvalidations; n > before {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("no invalidation applied within %v (Stats().LocalInvalidations = %d)", waitLimit, before)
		}
		time.Sleep(time.Millisecond)
	}
}

// remoteInvalidateDuringRead is the shared body of the tests of a remote
// Invalidate that reaches A while A's read of k is in flight: read starts
// a read of k on A (its reply held by hold) and returns a function that
// waits for it to end.
func remoteInvalidateDuringRead(t *testing.T, srv *redistest.Server, hold *replyHold, a, b *cacheaside.Cache[string, int64], version *atomic.Int64, read func() (wait func())) {
	t.Helper()
	applied := waitListening(t, srv, b, a, "probe")
	mustGetValue(t, b, "k", 1, "B fills Redis") // Redis holds 1; A's L1 has nothing

	hold.arm()
	wait := read()
	await(t, hold.ran, "A's read of k")
	version.Store(2)
	if err := b.Invalidate(context.Background(), "k"); err != nil {
		t.Fatalf("B.Invalidate(k) = %v", err)
	}
	waitApplied(t, a, applied)
	hold.unhold()
	wait() // it may answer 1: it began before the Invalidate

	mustGetValue(t, a, "k", 2, "A, after B's Invalidate reached it and A's older read returned")
}

// TestRemoteInvalidateDuringGetLeavesNoOldValueInL1: A's GET of k has run
// when B's Invalidate of k reaches A; A gets the reply afterwards. A's
// next Get must not find the value of that reply in its L1.
func TestRemoteInvalidateDuringGetLeavesNoOldValueInL1(t *testing.T) {
	srv := redistest.Start(t)
	version, load := versioned()
	hold := newReplyHold("mget") // a lone read: MGET of the value and the clock (clear.go)
	a := newCacheOn(t, holdClient(t, srv, hold), load, localFirst...)
	b := newCache(t, srv, load, localFirst...)
	remoteInvalidateDuringRead(t, srv, hold, a, b, version, func() func() {
		got := getAsync(testContext(t), a, "k")
		return func() {
			if r := await(t, got, "A's Get of k"); r.err != nil {
				t.Errorf("A's Get(k) across B's Invalidate = %v, %v; want a value", r.val, r.err)
			}
		}
	})
}

// TestRemoteInvalidateDuringGetManyLeavesNoOldValueInL1 is the same with
// GetMany's MGET.
func TestRemoteInvalidateDuringGetManyLeavesNoOldValueInL1(t *testing.T) {
	srv := redistest.Start(t)
	version, load := versioned()
	hold := newReplyHold("mget")
	a := newCacheOn(t, holdClient(t, srv, hold), load, localFirst...)
	b := newCache(t, srv, load, localFirst...)
	remoteInvalidateDuringRead(t, srv, hold, a, b, version, func() func() {
		done := make(chan error, 1)
		go func() {
			_, err := a.GetMany(testContext(t), []string{"k"})
			done <- err
		}()
		return func() {
			if err := await(t, done, "A's GetMany of k"); err != nil {
				t.Errorf("A's GetMany([k]) across B's Invalidate = %v", err)
			}
		}
	})
	if v, err := a.GetMany(testContext(t), []string{"k"}); err != nil || v["k"] != 2 {
		t.Errorf("A's GetMany([k]) after B's Invalidate = %v, %v; want k: 2", v, err)
	}
}

// TestRemoteInvalidateDuringPrefillLeavesNoOldValueInL1 is the same with a
// WithLocalPrefill round. The warm-up list is empty until the test has
// seen A's backplane listening, so that the round held is a later one.
func TestRemoteInvalidateDuringPrefillLeavesNoOldValueInL1(t *testing.T) {
	srv := redistest.Start(t)
	version, load := versioned()
	hold := newReplyHold("mget")
	var listed atomic.Bool
	a := newCacheOn(t, holdClient(t, srv, hold), load,
		cacheaside.WithLocalCache(100, time.Second), // a prefill round every 500ms
		cacheaside.WithLocalFirst(true),
		cacheaside.WithLocalPrefill(true),
		cacheaside.WithRestartCheck(0),
		cacheaside.WithWarmup(func(ctx context.Context) ([]string, error) {
			if listed.Load() {
				return []string{"k"}, nil
			}
			return nil, nil
		}))
	b := newCache(t, srv, load, localFirst...)
	remoteInvalidateDuringRead(t, srv, hold, a, b, version, func() func() {
		listed.Store(true) // the next round reads k, and its MGET is held
		return func() {
			// The round has ended, its L1 writes done, when the next
			// round sends its MGET.
			deadline := time.Now().Add(waitLimit)
			for hold.seen.Load() < 2 {
				if time.Now().After(deadline) {
					t.Fatalf("no prefill round after the held one within %v", waitLimit)
				}
				time.Sleep(time.Millisecond)
			}
		}
	})
}

// gateHook runs fn once, before the first command or pipeline sent after
// it was armed: that command then runs after fn.
type gateHook struct {
	armed atomic.Bool
	fn    func()
}

func (h *gateHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *gateHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.armed.CompareAndSwap(true, false) {
			h.fn()
		}
		return next(ctx, cmd)
	}
}

func (h *gateHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.armed.CompareAndSwap(true, false) {
			h.fn()
		}
		return next(ctx, cmds)
	}
}

// TestOwnInvalidateDuringGetLeavesNoOldValueInL1: a Get of k starts while
// this process's Invalidate of k runs, after it dropped k from L1 but
// before its script reached Redis, and reads the old value; its reply
// comes after Invalidate returned. A Get started after Invalidate returned
// must not find that value in L1.
func TestOwnInvalidateDuringGetLeavesNoOldValueInL1(t *testing.T) {
	srv := redistest.Start(t)
	version, load := versioned()
	hold := newReplyHold("mget") // a lone read: MGET of the value and the clock (clear.go)
	rdb := holdClient(t, srv, hold)
	gate := &gateHook{}
	rdb.AddHook(gate)
	a := newCacheOn(t, rdb, load, localFirst...)
	b := newCache(t, srv, load, localFirst...)
	waitListening(t, srv, b, a, "probe") // A's L1 is trusted by read-first Gets
	mustGetValue(t, a, "k", 1, "fill")

	// Invalidate's first command is its script; before it runs, a Get of
	// k misses L1 (Invalidate dropped k) and reads the old value.
	ctx := testContext(t)
	var got <-chan outcome[int64]
	gate.fn = func() {
		hold.arm()
		got = getAsync(ctx, a, "k")
		select {
		case <-hold.ran:
		case <-time.After(waitLimit):
			t.Errorf("the Get's GET of k did not run within %v", waitLimit)
		}
	}
	gate.armed.Store(true)
	version.Store(2)
	if err := a.Invalidate(context.Background(), "k"); err != nil {
		t.Fatalf("Invalidate(k) = %v", err)
	}
	if gate.armed.Load() {
		t.Fatal("Invalidate(k) sent no command: the test holds no read inside it")
	}
	hold.unhold()
	if r := await(t, got, "the Get of k across Invalidate"); r.err != nil {
		t.Errorf("Get(k) across Invalidate = %v, %v; want a value", r.val, r.err)
	}
	mustGetValue(t, a, "k", 2, "after Invalidate returned and an older read ended")
}

// dialGate is a go-redis hook that fails every new connection of a client
// while shut: a subscription that dropped cannot come back until the test
// opens it again.
type dialGate struct {
	shut  atomic.Bool
	tried chan struct{} // closed at the first dial refused
	once  sync.Once
}

func (g *dialGate) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if g.shut.Load() {
			g.once.Do(func() { close(g.tried) })
			return nil, errors.New("dialGate: shut by the test")
		}
		return next(ctx, network, addr)
	}
}

func (g *dialGate) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (g *dialGate) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestReadAcrossResubscribeIsNotServedFromL1: A's GET of k has run when
// A's subscription drops; B invalidates k while A cannot resubscribe, so
// A never hears of it; A resubscribes, then gets the reply. The value it
// read must not be served by A's read-first L1.
func TestReadAcrossResubscribeIsNotServedFromL1(t *testing.T) {
	srv := redistest.Start(t)
	version, load := versioned()
	hold := newReplyHold("mget") // a lone read: MGET of the value and the clock (clear.go)
	rdb := holdClient(t, srv, hold)
	gate := &dialGate{tried: make(chan struct{})}
	rdb.AddHook(gate)
	a := newCacheOn(t, rdb, load, localFirst...)
	b := newCache(t, srv, load, localFirst...)
	waitListening(t, srv, b, a, "probe")
	mustGetValue(t, b, "k", 1, "B fills Redis")

	hold.arm()
	got := getAsync(testContext(t), a, "k")
	await(t, hold.ran, "A's GET of k")
	gate.shut.Store(true)
	srv.CLI(t, "CLIENT", "KILL", "TYPE", "pubsub")
	await(t, gate.tried, "A's attempt to resubscribe")
	version.Store(2)
	if err := b.Invalidate(context.Background(), "k"); err != nil {
		t.Fatalf("B.Invalidate(k) = %v", err)
	}
	gate.shut.Store(false)
	waitListening(t, srv, b, a, "probe") // A is subscribed again, and knows it
	hold.unhold()
	if r := await(t, got, "A's Get of k"); r.err != nil {
		t.Errorf("A's Get(k) across the resubscription = %v, %v; want a value", r.val, r.err)
	}
	mustGetValue(t, a, "k", 2, "A, after it resubscribed and its older read returned")
}
