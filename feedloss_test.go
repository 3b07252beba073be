package cacheaside_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/l1"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestL1NotResumedOverALostStream: A subscribes while the invalidation
// stream does not exist yet (a fresh deployment), fills its L1 with k and
// drops before any message reaches it. While A cannot subscribe again, B
// invalidates k (the stream's first entry) and the stream is then lost:
// flushed and written again, or Redis restarts empty. A cannot know what
// it missed, so once it subscribes again it must not trust its L1: its
// Get(k) returns the new row, not the one its L1 held.
func TestL1NotResumedOverALostStream(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(t *testing.T, srv *redistest.Server)
	}{
		{"FLUSHALL then a new entry", func(t *testing.T, srv *redistest.Server) {
			srv.CLI(t, "FLUSHALL")
		}},
		{"restart empty", func(t *testing.T, srv *redistest.Server) {
			srv.Restart()
		}},
		{"stream deleted", func(t *testing.T, srv *redistest.Server) {
			srv.CLI(t, "DEL", "ca:invalidations")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			version, load := versioned()
			a, gate := gatedCache(t, srv, load)
			b := newCache(t, srv, load) // no L1: publishes, never subscribes
			waitSubscribed(t, srv, 1)
			waitFor(t, 10*time.Second, "A trusts its L1 entry of k", func() bool {
				before := a.Stats().LocalHits
				mustGetValue(t, a, "k", 1, "A fills its L1")
				return a.Stats().LocalHits > before
			})
			if n := srv.CLI(t, "EXISTS", "ca:invalidations"); n != "0" {
				t.Fatalf("EXISTS ca:invalidations = %s before any invalidation, want 0", n)
			}

			dropSubscription(t, srv, gate)
			version.Store(2)
			if err := b.Invalidate(context.Background(), "k"); err != nil {
				t.Fatalf("B.Invalidate(k) = %v", err)
			}
			tc.lose(t, srv)
			waitFor(t, 10*time.Second, "B invalidates another key after the loss", func() bool {
				return b.Invalidate(context.Background(), "other") == nil
			})
			gate.shut.Store(false)
			waitSubscribed(t, srv, 1)
			waitConfirmed(t, b, a)
			mustGetValue(t, a, "k", 2, "A, subscribed again after the stream was lost")
		})
	}
}

// TestL1NotResumedBesideAnEarlierPublisher: a fleet in a rolling upgrade
// has a publisher of the earlier version, which PUBLISHes its messages
// (l1.Encode, without a stream entry). A receives one of them, then drops;
// meanwhile that publisher invalidates k, which the stream never holds.
// Once A subscribes again its stream cannot tell what it missed: its
// Get(k) must return the new row, not the one its L1 held.
func TestL1NotResumedBesideAnEarlierPublisher(t *testing.T) {
	srv, version, a, b, gate := resumablePair(t)
	oldPublish := func(key string) {
		t.Helper()
		srv.CLI(t, "PUBLISH", "ca:invalidations", string(l1.Encode("v0.2-process:", []string{valueKey(key)})))
	}
	before := a.Stats().LocalInvalidations
	oldPublish("x")
	waitApplied(t, a, before)
	before = a.Stats().LocalHits
	mustGetValue(t, a, "k", 1, "A's L1")
	if a.Stats().LocalHits != before+1 {
		t.Fatalf("A's Get(k) before the drop was not a local hit")
	}

	dropSubscription(t, srv, gate)
	version.Store(2)
	srv.CLI(t, "DEL", valueKey("k"))
	oldPublish("k") // A is not subscribed: lost
	gate.shut.Store(false)
	waitSubscribed(t, srv, 2)
	waitConfirmed(t, b, a)
	mustGetValue(t, a, "k", 2, "A, subscribed again after missing an earlier publisher's message")
}

// resumablePair starts a server, a Cache A (gatedCache) that knows the
// stream's last ID and holds k (version 1) in its L1, and a Cache B with
// a read-first L1 on the same load, which sets the version.
func resumablePair(t *testing.T) (srv *redistest.Server, version *atomic.Int64, a, b *cacheaside.Cache[string, int64], gate *dialGate) {
	t.Helper()
	srv = redistest.Start(t)
	version, load := versioned()
	a, gate = gatedCache(t, srv, load)
	b = newCache(t, srv, load, localFirst...)
	waitListening(t, srv, b, a, "probe") // A knows the stream's last ID
	mustGetValue(t, a, "k", 1, "A fills its L1")
	return srv, version, a, b, gate
}

// gatedCache returns a Cache with a read-first L1 on a client of its own
// to srv, whose new connections fail while the returned gate is shut.
func gatedCache(t *testing.T, srv *redistest.Server, load cacheaside.LoadFunc[string, int64]) (*cacheaside.Cache[string, int64], *dialGate) {
	t.Helper()
	rdb := srv.Client(t)
	gate := &dialGate{tried: make(chan struct{})}
	rdb.AddHook(gate)
	return newCacheOn(t, rdb, load, localFirst...), gate
}

// dropSubscription ends the pub/sub connections of srv and waits until
// the client behind gate (shut from now on) fails to dial again: its
// subscription stays dropped until the test opens gate.
func dropSubscription(t *testing.T, srv *redistest.Server, gate *dialGate) {
	t.Helper()
	gate.shut.Store(true)
	srv.CLI(t, "CLIENT", "KILL", "TYPE", "pubsub")
	await(t, gate.tried, "the attempt to subscribe again")
}

// waitConfirmed waits until to applies an invalidation from from: to's
// subscription is confirmed, and whatever it does on the confirmation
// (resume or distrust its L1) is done.
func waitConfirmed[V any](t *testing.T, from, to *cacheaside.Cache[string, V]) {
	t.Helper()
	before := to.Stats().LocalInvalidations
	waitFor(t, 10*time.Second, "a probe reaches the resubscribed Cache", func() bool {
		// A probe cut at a short Redis timeout on a loaded machine is
		// queued and retried by the next round (seen: 200ms, at a load
		// average of 17 with -race); any other error fails the test.
		if err := from.Invalidate(context.Background(), "probe"); err != nil && !errors.Is(err, cacheaside.ErrRedisUnavailable) {
			t.Fatalf("Invalidate(probe) = %v", err)
		}
		time.Sleep(20 * time.Millisecond)
		return to.Stats().LocalInvalidations > before
	})
}

// TestL1ResumesOnACluster: TestL1ResumesAfterDroppedSubscription on a
// Redis Cluster, where the invalidation stream lives on the node of its
// key's slot and the subscription on any node: A's dropped subscription
// resumes from the stream, applies the invalidation it missed (k) and
// trusts the rest of its L1 (k2) again.
func TestL1ResumesOnACluster(t *testing.T) {
	cl := redistest.StartCluster(t)
	version, load := versioned()
	gate := &dialGate{tried: make(chan struct{})}
	var d net.Dialer
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), Dialer: gate.DialHook(d.DialContext)})
	t.Cleanup(func() { _ = rdb.Close() })
	a := newCacheOn(t, rdb, load, localFirst...)
	b := newCacheOn(t, cl.Client(t), load, localFirst...)
	waitConfirmed(t, b, a)
	mustGetValue(t, a, "k", 1, "A fills its L1")
	mustGetValue(t, a, "k2", 1, "A fills its L1")

	gate.shut.Store(true)
	for _, n := range cl.Nodes() {
		n.CLI(t, "CLIENT", "KILL", "TYPE", "pubsub")
	}
	await(t, gate.tried, "A's attempt to subscribe again")
	version.Store(2)
	if err := b.Invalidate(context.Background(), "k"); err != nil {
		t.Fatalf("B.Invalidate(k) = %v", err)
	}
	gate.shut.Store(false)
	waitFor(t, 20*time.Second, "A resumes its L1", func() bool { return a.Stats().LocalResumes == 1 })
	st := a.Stats()
	mustGetValue(t, a, "k2", 1, "A, right after it resumed")
	if after := a.Stats(); after.LocalHits != st.LocalHits+1 {
		t.Errorf("A's Get(k2) after resuming was not a local hit")
	}
	mustGetValue(t, a, "k", 2, "A, after it resumed (the invalidation it missed)")
}

// TestStreamKeyOfAnotherType: another program stores a string under the
// invalidation stream's key, so the feed's XADD fails with WRONGTYPE.
// That is not a Redis fault: B's Invalidate applies in Redis, publishes
// the message without its stream entry (A drops k at once), returns nil,
// queues nothing and counts the broken feed. A, which can no longer
// catch up from the stream, distrusts its L1 after a dropped subscription.
func TestStreamKeyOfAnotherType(t *testing.T) {
	srv, version, a, b, gate := resumablePair(t)
	srv.CLI(t, "DEL", "ca:invalidations")
	srv.CLI(t, "SET", "ca:invalidations", "another program's string")

	version.Store(2)
	before := a.Stats().LocalInvalidations
	if err := b.Invalidate(context.Background(), "k"); err != nil {
		t.Errorf("B.Invalidate(k) with the stream key holding a string = %v, want nil: the message went out", err)
	}
	if s := b.Stats(); s.InvalidationsPending != 0 || s.LocalFeedBroken != 1 {
		t.Errorf("B's Stats(): InvalidationsPending = %d, LocalFeedBroken = %d; want 0 and 1", s.InvalidationsPending, s.LocalFeedBroken)
	}
	waitApplied(t, a, before)
	mustGetValue(t, a, "k", 2, "A, after B's invalidation without the stream")
	loads := b.Stats().Loads
	mustGetValue(t, b, "k", 2, "B")
	mustGetValue(t, b, "k", 2, "B again")
	if n := b.Stats().Loads - loads; n > 1 {
		t.Errorf("B's two Gets of k loaded %d times, want at most 1: nothing is pending", n)
	}

	// A missed an invalidation while dropped: the stream cannot tell.
	dropSubscription(t, srv, gate)
	version.Store(3)
	if err := b.Invalidate(context.Background(), "k"); err != nil {
		t.Errorf("B.Invalidate(k) while A is dropped = %v, want nil", err)
	}
	gate.shut.Store(false)
	waitSubscribed(t, srv, 2)
	waitConfirmed(t, b, a)
	mustGetValue(t, a, "k", 3, "A, subscribed again after missing a message the stream could not hold")
	if got := srv.CLI(t, "GET", "ca:invalidations"); got != "another program's string" {
		t.Errorf("GET ca:invalidations = %q, want the other program's string untouched", got)
	}
}
