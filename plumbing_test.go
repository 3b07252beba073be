package cacheaside_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// Caches built on one go-redis client share one invalidation subscription
// (one pub/sub connection, subscribed to each Cache's channel) and one
// restart watcher (one goroutine, one round trip per check for every
// Cache's marker), whatever their settings (issue 13 item 4).

// plumbingPrefixes gives ten Caches five prefixes, two Caches each: Caches
// with different prefixes and Caches with the same one.
func plumbingPrefix(i int) string { return fmt.Sprintf("pl%d:", i/2) }

// tenLocalCaches builds ten Caches with a local cache on rdb, two per
// prefix, and waits until each channel has its subscriber.
func tenLocalCaches(t *testing.T, srv *redistest.Server, rdb redis.UniversalClient, load cacheaside.LoadFunc[string, int64]) []*cacheaside.Cache[string, int64] {
	t.Helper()
	caches := make([]*cacheaside.Cache[string, int64], 10)
	for i := range caches {
		caches[i] = newCacheOn(t, rdb, load, cacheaside.WithPrefix(plumbingPrefix(i)), cacheaside.WithL1(cacheaside.L1{}))
	}
	for p := range 5 {
		waitSubscribedTo(t, srv, fmt.Sprintf("pl%d:invalidations", p), 1)
	}
	return caches
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

// probeAll has a writer on another client invalidate a probe key under
// each prefix, again every 100ms, until each Cache in caches applied one:
// each is then subscribed, and knows it (a probe sent before a
// resubscription is lost).
func probeAll(t *testing.T, writers map[string]*cacheaside.Cache[string, int64], caches []*cacheaside.Cache[string, int64]) {
	t.Helper()
	before := make([]uint64, len(caches))
	for i, c := range caches {
		before[i] = c.Stats().LocalInvalidations
	}
	var sent time.Time
	waitFor(t, waitLimit, "every Cache applied a probe invalidation", func() bool {
		if time.Since(sent) >= 100*time.Millisecond {
			for _, w := range writers {
				if err := w.Invalidate(testContext(t), "probe"); err != nil {
					t.Fatalf("Invalidate(probe) = %v", err)
				}
			}
			sent = time.Now()
		}
		for i, c := range caches {
			if c.Stats().LocalInvalidations == before[i] {
				return false
			}
		}
		return true
	})
}

// writersFor builds, on a second client, one Cache without a local cache
// per prefix of caches.
func writersFor(t *testing.T, srv *redistest.Server, load cacheaside.LoadFunc[string, int64], n int) map[string]*cacheaside.Cache[string, int64] {
	t.Helper()
	other := srv.Client(t)
	writers := map[string]*cacheaside.Cache[string, int64]{}
	for i := range n {
		p := plumbingPrefix(i)
		if writers[p] == nil {
			writers[p] = newCacheOn(t, other, load, cacheaside.WithPrefix(p))
		}
	}
	return writers
}

// TestTenCachesShareOneSubscription: ten Caches with a local cache on one
// client hold one pub/sub connection, subscribed once to each of their
// five channels, and an Invalidate from another client reaches the local
// cache of each.
func TestTenCachesShareOneSubscription(t *testing.T) {
	srv := redistest.Start(t)
	load := func(ctx context.Context, k string) (int64, error) { return 1, nil }
	caches := tenLocalCaches(t, srv, srv.Client(t), load)
	if n := pubsubConns(t, srv); n != 1 {
		t.Errorf("CLIENT LIST TYPE pubsub shows %d connections for ten Caches on one client, want 1", n)
	}
	for p := range 5 {
		ch := fmt.Sprintf("pl%d:invalidations", p)
		if got, want := srv.CLI(t, "PUBSUB", "NUMSUB", ch), "["+ch+" 1]"; got != want {
			t.Errorf("PUBSUB NUMSUB %s = %s, want %s", ch, got, want)
		}
	}

	// Every Cache reads k into its L1; an Invalidate from the other
	// client under each prefix drops it from both Caches of the prefix.
	writers := writersFor(t, srv, load, len(caches))
	probeAll(t, writers, caches)
	for _, c := range caches {
		mustGetValue(t, c, "k", 1, "first read")
	}
	before := make([]uint64, len(caches))
	for i, c := range caches {
		before[i] = c.Stats().LocalInvalidations
	}
	for _, w := range writers {
		if err := w.Set(testContext(t), "k", 2); err != nil {
			t.Fatalf("Set(k, 2) = %v", err)
		}
	}
	for i, c := range caches {
		waitApplied(t, c, before[i])
		mustGetValue(t, c, "k", 2, fmt.Sprintf("cache %d after another client's Set", i))
	}
}

// TestSharedSubscriptionDropReachesEveryCache: when the one pub/sub
// connection is killed, every Cache is told: each stops trusting its L1,
// and once resubscribed, having read from the invalidation stream that it
// missed nothing, resumes it (Stats.LocalResumes), so its next Get of a
// key it holds is a local hit again.
func TestSharedSubscriptionDropReachesEveryCache(t *testing.T) {
	srv := redistest.Start(t)
	load := func(ctx context.Context, k string) (int64, error) { return 1, nil }
	caches := tenLocalCaches(t, srv, srv.Client(t), load)
	writers := writersFor(t, srv, load, len(caches))
	probeAll(t, writers, caches)
	for _, c := range caches {
		mustGetValue(t, c, "k", 1, "first read")
		mustGetValue(t, c, "k", 1, "second read")
		if c.Stats().LocalHits == 0 {
			t.Fatalf("second Get(k) was no local hit: %+v", c.Stats())
		}
	}

	srv.CLI(t, "CLIENT", "KILL", "TYPE", "pubsub")
	for i, c := range caches {
		waitFor(t, 10*time.Second, fmt.Sprintf("cache %d resumes its L1", i), func() bool { return c.Stats().LocalResumes == 1 })
	}
	probeAll(t, writers, caches) // invalidations flow again
	for i, c := range caches {
		s := c.Stats()
		mustGetValue(t, c, "k", 1, "read after the resubscription")
		if after := c.Stats(); after.LocalHits != s.LocalHits+1 || after.Hits != s.Hits {
			t.Errorf("cache %d: Get(k) after the resumed subscription: local hits %d→%d, Redis hits %d→%d; want a local hit (nothing was missed)",
				i, s.LocalHits, after.LocalHits, s.Hits, after.Hits)
		}
	}
	if n := pubsubConns(t, srv); n != 1 {
		t.Errorf("CLIENT LIST TYPE pubsub shows %d connections after the resubscription, want 1", n)
	}
}

// TestSharedSubscriptionOutlivesClosedCaches: closing nine of the ten
// Caches keeps the tenth's invalidations coming; closing it too leaves no
// pub/sub connection.
func TestSharedSubscriptionOutlivesClosedCaches(t *testing.T) {
	srv := redistest.Start(t)
	load := func(ctx context.Context, k string) (int64, error) { return 1, nil }
	caches := tenLocalCaches(t, srv, srv.Client(t), load)
	writers := writersFor(t, srv, load, len(caches))
	for _, c := range caches[:9] {
		if err := c.Close(); err != nil {
			t.Fatalf("Close() = %v", err)
		}
	}
	last := caches[9]
	probeAll(t, writers, []*cacheaside.Cache[string, int64]{last})
	for p := range 4 {
		waitSubscribedTo(t, srv, fmt.Sprintf("pl%d:invalidations", p), 0)
	}
	if n := pubsubConns(t, srv); n != 1 {
		t.Errorf("CLIENT LIST TYPE pubsub shows %d connections with one Cache left, want 1", n)
	}
	if err := last.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	waitFor(t, waitLimit, "no pub/sub connection after the last Cache closed", func() bool { return pubsubConns(t, srv) == 0 })
}

// markerTrips counts, installed as roundTrips(h.count) on a client, the
// round trips that write warm-up markers (SET … NX of a …warm-marker key) and the writes in each.
type markerTrips struct {
	mu    sync.Mutex
	trips []int
}

func (h *markerTrips) count(cmds []redis.Cmder) {
	n := 0
	for _, c := range cmds {
		if a := c.Args(); c.Name() == "set" && len(a) > 1 && a[len(a)-1] == "nx" {
			if k, _ := a[1].(string); strings.HasSuffix(k, "warm-marker") {
				n++
			}
		}
	}
	if n > 0 {
		h.mu.Lock()
		h.trips = append(h.trips, n)
		h.mu.Unlock()
	}
}

// seen returns how many round trips wrote markers since the last take.
func (h *markerTrips) seen() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.trips)
}

// take returns the writes per round trip since the last take.
func (h *markerTrips) take() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	t := h.trips
	h.trips = nil
	return t
}

// TestTenCachesShareOneRestartWatcher: ten Caches with warm-up keys on
// one client check their five markers in one round trip per interval (not
// ten), and a FLUSHALL warms all ten, the two of each prefix included.
func TestTenCachesShareOneRestartWatcher(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	trips := &markerTrips{}
	rdb.AddHook(roundTrips(trips.count))
	ld := &faultLoader{}
	const every = 50 * time.Millisecond
	caches := make([]*cacheaside.Cache[int, string], 10)
	for i := range caches {
		keys := faultKeys(10*i, 10*i+4) // each Cache its own keys
		caches[i] = newFaultCache(t, rdb, ld.load,
			cacheaside.WithRedisTimeout(time.Second), // the warm-ups are not about the budget
			cacheaside.WithPrefix(plumbingPrefix(i)),
			cacheaside.WithWarmup(func(context.Context) ([]int, error) { return keys, nil }),
			cacheaside.WithRestartCheck(every))
	}
	// The new server has no marker: the first check of each prefix
	// creates it and warms the Caches of that prefix that joined by then.
	markers := make([]string, 5)
	for p := range markers {
		markers[p] = fmt.Sprintf("pl%d:warm-marker", p)
	}
	waitFor(t, waitLimit, "the 5 markers written", func() bool {
		return srv.CLI(t, append([]string{"EXISTS"}, markers...)...) == "5"
	})
	// The watcher calls the Empty of a marker's Caches after the reply of
	// the write that created it: the Stats of a Cache can read 0 restarts
	// for a moment after its marker is in Redis (seen on a loaded machine:
	// its first warm-up then passed for the FLUSHALL's, "0 of its 5
	// warm-up keys"). The watcher's rounds run one after another on one
	// goroutine, and a round trip is counted before it is sent: one begun
	// after the markers were seen comes after those calls.
	trips.take()
	waitFor(t, waitLimit, "a marker check after the markers were written", func() bool { return trips.seen() > 0 })
	base := make([]cacheaside.Stats, len(caches))
	waitFor(t, waitLimit, "the warm-ups of the restarts found done", func() bool {
		for i, c := range caches {
			base[i] = c.Stats()
			if base[i].Warmed != 5*base[i].RestartsDetected {
				return false
			}
		}
		return true
	})
	for i, s := range base {
		// A Cache that joined after its prefix's marker was written found
		// Redis not empty; the other one, that joined before, warmed.
		if s.RestartsDetected > 1 || s.RestartsDetected+base[i^1].RestartsDetected == 0 {
			t.Errorf("cache %d: %d restarts found (the other Cache of its prefix: %d), want at most 1, and 1 for at least one of them",
				i, s.RestartsDetected, base[i^1].RestartsDetected)
		}
	}

	time.Sleep(3 * every) // Caches built at different times fall into one round
	trips.take()
	start := time.Now()
	time.Sleep(time.Second)
	got := trips.take()
	window := time.Since(start) // a busy machine sleeps longer than asked
	if len(got) == 0 {
		t.Fatalf("no marker check in %v with a %v interval", window, every)
	}
	if bad := len(got) - count(got, 5); bad > 0 {
		t.Errorf("%d of %d marker round trips did not write the 5 markers of the ten Caches together (markers per round trip: %v)", bad, len(got), got[:min(len(got), 20)])
	}
	if max := int(window/every) + 2; len(got) > max {
		t.Errorf("%d marker round trips in %v with a %v interval, want at most %d (one watcher per client)", len(got), window, every, max)
	}

	srv.CLI(t, "FLUSHALL")
	waitFor(t, waitLimit, "every Cache warmed again after FLUSHALL", func() bool {
		for i, c := range caches {
			if s := c.Stats(); s.RestartsDetected != base[i].RestartsDetected+1 || s.Warmed != base[i].Warmed+5 {
				return false
			}
		}
		return true
	})
	for i := range caches {
		if n := existing(t, srv, plumbingPrefix(i), faultKeys(10*i, 10*i+4)); n != 5 {
			t.Errorf("cache %d: %d of its 5 warm-up keys in Redis after the FLUSHALL warm-up, want 5", i, n)
		}
	}
}

// count returns how many elements of s are v.
func count(s []int, v int) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}
