package cacheaside_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// The tests in this file cover the in-process cache (WithLocalCache): what
// it saves during an outage, and that it never serves what Redis or an
// Invalidate would not.

// getRounds runs rounds of Gets: in each, workers goroutines start together
// and each gets every key once. It reports each Get that does not return the
// key's loader value.
func getRounds(t *testing.T, c *cacheaside.Cache[int, string], rounds, workers int, keys []int) {
	t.Helper()
	for range rounds {
		start := make(chan struct{})
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				<-start
				for _, k := range keys {
					ctx, cancel := context.WithTimeout(context.Background(), faultGetTimeout)
					v, err := c.Get(ctx, k)
					cancel()
					if err != nil || v != faultValue(k) {
						t.Errorf("Get(%d) = %q, %v, want %q, nil", k, v, err, faultValue(k))
					}
				}
			})
		}
		close(start)
		wg.Wait()
	}
}

func TestLocalCacheBoundsLoadsDuringOutage(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ld := &faultLoader{}
	c := newFaultCache(t, rdb, ld.load,
		cacheaside.WithRedisTimeout(faultBudget),
		cacheaside.WithLocalCache(1000, 2*time.Second))
	keys := faultKeys(0, 9)
	mustGetAll(t, c, keys) // loads, fills Redis and L1
	mustGetAll(t, c, keys) // hits

	srv.Kill()
	before := c.Stats()
	getRounds(t, c, 10, 5, keys) // each key 50 times
	after := c.Stats()
	if loads := after.Loads - before.Loads; loads > uint64(len(keys)) {
		t.Errorf("%d Gets of %d keys in L1 with Redis down made %d loads, want at most one per key", 50*len(keys), len(keys), loads)
	}
	if after.LocalHits == before.LocalHits {
		t.Errorf("Stats().LocalHits = %d with Redis down, want it to grow", after.LocalHits)
	}
	recoverServer(t, srv, rdb)
}

// TestWithoutLocalCacheOutageLoadsPerRound is the contrast: without L1 each
// round of Gets with Redis down loads every key, but only once per key,
// because concurrent Gets of a key share one load.
func TestWithoutLocalCacheOutageLoadsPerRound(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ld := &faultLoader{delay: 30 * time.Millisecond}
	c := newFaultCache(t, rdb, ld.load, cacheaside.WithRedisTimeout(faultBudget))
	keys := faultKeys(0, 9)
	mustGetAll(t, c, keys)
	mustGetAll(t, c, keys)

	srv.Kill()
	const rounds, workers = 5, 5
	before := c.Stats()
	getRounds(t, c, rounds, workers, keys)
	loads := c.Stats().Loads - before.Loads
	if loads < rounds*uint64(len(keys)) || loads > rounds*uint64(len(keys)) {
		t.Errorf("%d rounds of %d concurrent Gets of each of %d keys with Redis down made %d loads, want %d (one per key per round)",
			rounds, workers, len(keys), loads, rounds*len(keys))
	}
	recoverServer(t, srv, rdb)
}

func TestLocalCacheNeverOutlivesRedisTTL(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ld := &faultLoader{}
	const ttl = 600 * time.Millisecond
	c := newFaultCache(t, rdb, ld.load,
		cacheaside.WithRedisTimeout(faultBudget),
		cacheaside.WithTTL(ttl), cacheaside.WithJitter(0),
		cacheaside.WithLocalCache(100, 10*time.Second))
	// The entry's Redis TTL runs from its fill, which happens between
	// start and filledBy: within the TTL is judged from start, past it
	// from filledBy (a loaded machine may take long for the fill).
	start := time.Now()
	mustGet(t, c, 1)
	filledBy := time.Now()
	srv.Kill()

	before := c.Stats()
	mustGet(t, c, 1)
	if s := c.Stats(); time.Since(start) < ttl && (s.LocalHits != before.LocalHits+1 || s.Loads != before.Loads) {
		t.Errorf("Get within the Redis TTL with Redis down: Stats() went from %+v to %+v, want one local hit and no load", before, s)
	}
	time.Sleep(time.Until(filledBy.Add(ttl + 100*time.Millisecond)))
	before = c.Stats()
	mustGet(t, c, 1)
	if s := c.Stats(); s.Loads != before.Loads+1 || s.LocalHits != before.LocalHits {
		t.Errorf("Get after the Redis TTL (%v) with Redis down: loads %d→%d, local hits %d→%d; want a load: L1 must not outlive the Redis entry",
			ttl, before.Loads, s.Loads, before.LocalHits, s.LocalHits)
	}
	recoverServer(t, srv, rdb)
}

func TestInvalidateDropsLocalCopyDuringOutage(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	var version atomic.Int64
	version.Store(1)
	c, err := cacheaside.New(rdb, func(ctx context.Context, k int) (string, error) {
		return strconv.Itoa(k) + "@v" + strconv.FormatInt(version.Load(), 10), nil
	}, cacheaside.WithRedisTimeout(faultBudget), cacheaside.WithLocalCache(100, 10*time.Second))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	get := func() string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), faultGetTimeout)
		defer cancel()
		v, err := c.Get(ctx, 7)
		if err != nil {
			t.Fatalf("Get(7) = %q, %v, want a value", v, err)
		}
		return v
	}
	if v := get(); v != "7@v1" {
		t.Fatalf("Get(7) = %q, want 7@v1", v)
	}
	srv.Kill()
	if v := get(); v != "7@v1" {
		t.Fatalf("Get(7) with Redis down = %q, want 7@v1 from L1", v)
	}

	version.Store(2)
	err = c.Invalidate(context.Background(), 7)
	if err == nil || !strings.Contains(err.Error(), "shared copy may be stale") {
		t.Errorf("Invalidate(7) with Redis down = %v, want an error saying the shared copy may be stale", err)
	}
	before := c.Stats()
	if v := get(); v != "7@v2" {
		t.Errorf("Get(7) after Invalidate with Redis down = %q, want 7@v2 from the loader, not the dropped L1 copy", v)
	}
	if s := c.Stats(); s.Loads != before.Loads+1 {
		t.Errorf("Stats().Loads = %d after Invalidate, want %d", s.Loads, before.Loads+1)
	}
	recoverServer(t, srv, rdb)
}

func TestLocalFirstSkipsRedisRead(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ld := &faultLoader{}
	// Not a test of the Redis timeout (redisTimeout says why).
	c := newFaultCache(t, rdb, ld.load, cacheaside.WithRedisTimeout(redisTimeout),
		cacheaside.WithLocalCache(100, 10*time.Second),
		cacheaside.WithLocalFirst(true))
	// L1 copies are trusted once read under a confirmed subscription.
	other := newFaultCache(t, srv.Client(t), ld.load, cacheaside.WithRedisTimeout(redisTimeout), cacheaside.WithLocalCache(100, 10*time.Second))
	waitListening(t, srv, other, c, -1)
	mustGet(t, c, 1)
	gets := redisReads(t, srv)
	before := c.Stats()
	for range 10 {
		mustGet(t, c, 1)
	}
	after := c.Stats()
	if n := redisReads(t, srv); n != gets {
		t.Errorf("10 Gets of a key in L1 with WithLocalFirst ran GET %d times, want 0", n-gets)
	}
	if after.LocalHits-before.LocalHits != 10 || after.Hits != before.Hits || after.Loads != before.Loads {
		t.Errorf("Stats() went from %+v to %+v, want 10 local hits and no Redis hit or load", before, after)
	}
}

// TestLocalFirstHitAllocatesNothing: with WithLocalFirst, a Get answered
// from L1 makes no allocation (the value key of a default-encoded key is
// looked up from a buffer on the stack), and a key whose encoding needs
// hashing ('}' in a string key) is still found.
func TestLocalFirstHitAllocatesNothing(t *testing.T) {
	srv := redistest.Start(t)
	ld := &faultLoader{}
	// Not a test of the Redis timeout: with the default 100ms, the probe
	// Invalidate of waitListening failed on a loaded machine (redisTimeout).
	c := newFaultCache(t, srv.Client(t), ld.load, cacheaside.WithRedisTimeout(redisTimeout),
		cacheaside.WithLocalCache(100, time.Minute), cacheaside.WithLocalFirst(true))
	other := newFaultCache(t, srv.Client(t), ld.load, cacheaside.WithRedisTimeout(redisTimeout), cacheaside.WithLocalCache(100, time.Minute))
	waitListening(t, srv, other, c, -1)
	const k = 123456 // past strconv's table of small numbers
	mustGet(t, c, k)
	ctx := testContext(t)
	before, want := c.Stats(), faultValue(k)
	allocs := testing.AllocsPerRun(200, func() {
		if v, err := c.Get(ctx, k); err != nil || v != want {
			t.Fatalf("Get(%d) = %q, %v, want %q", k, v, err, want)
		}
	})
	if hits := c.Stats().LocalHits - before.LocalHits; hits < 200 {
		t.Fatalf("%d of 201 Gets answered from L1, want all", hits)
	}
	if allocs != 0 {
		t.Errorf("a Get answered from L1 allocates %v objects, want 0", allocs)
	}

	newStringCache := func() *cacheaside.Cache[string, string] {
		sc, err := cacheaside.New(srv.Client(t), func(ctx context.Context, k string) (string, error) { return "v" + k, nil },
			cacheaside.WithRedisTimeout(redisTimeout), cacheaside.WithPrefix("s:"), cacheaside.WithLocalCache(100, time.Minute), cacheaside.WithLocalFirst(true))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = sc.Close() })
		return sc
	}
	sc, so := newStringCache(), newStringCache()
	waitListeningOn(t, srv, "s:invalidations", so, sc, "probe")
	for _, key := range []string{"a}b", "#x", "plain"} {
		if _, err := sc.Get(ctx, key); err != nil {
			t.Fatal(err)
		}
		b := sc.Stats()
		if v, err := sc.Get(ctx, key); err != nil || v != "v"+key || sc.Stats().LocalHits != b.LocalHits+1 {
			t.Errorf("second Get(%q) = %q, %v with %d local hits, want %q from L1", key, v, err, sc.Stats().LocalHits-b.LocalHits, "v"+key)
		}
	}
}

// TestJoinerUsesLocalCopyDuringProbe: while the breaker is half-open, the
// Get that probes a frozen Redis waits out the Redis timeout; a Get of the
// same key that joins its flight meanwhile answers from L1 at once.
func TestJoinerUsesLocalCopyDuringProbe(t *testing.T) {
	srv := redistest.Start(t)
	rdb := newFaultClient(t, srv.Addr())
	ld := &faultLoader{}
	c := newFaultCache(t, rdb, ld.load,
		cacheaside.WithLocalCache(100, time.Minute),
		cacheaside.WithRedisTimeout(time.Second),
		cacheaside.WithBreaker(1, 200*time.Millisecond))
	mustGet(t, c, 7) // in Redis and in L1
	thaw := freezeServer(t, srv)
	mustGet(t, c, 7) // waits the timeout, opens the breaker, answers from L1
	if st := c.Stats(); st.Breaker != cacheaside.BreakerOpen {
		t.Fatalf("breaker = %s after a call past the Redis timeout, want open", st.Breaker)
	}
	time.Sleep(300 * time.Millisecond) // past the cooldown: the next call probes

	probe := getAsync(testContext(t), c, 7)
	time.Sleep(50 * time.Millisecond) // the probe is waiting on the frozen Redis
	if took := mustGet(t, c, 7); took > 500*time.Millisecond {
		t.Errorf("a Get joining the probe's flight took %v, want an L1 answer well before the 1s Redis timeout", took)
	}
	if res := await(t, probe, "the probe Get"); res.err != nil || res.val != faultValue(7) {
		t.Errorf("probe Get(7) = %q, %v", res.val, res.err)
	}
	thaw()
	recoverServer(t, srv, rdb)
	if n := ld.calls.Load(); n != 1 {
		t.Errorf("loader calls = %d, want 1 (the first Get): every other answer came from Redis or L1", n)
	}
}

// TestL1ServesReadsByDefault: WithL1 alone answers healthy Gets from the
// local cache (v0.1's WithLocalCache alone read it only during an outage:
// LocalHits = 0 on a healthy run); OutageOnly keeps that behaviour. The
// local copy is trusted once the invalidation subscription is confirmed,
// so the first Gets may still read Redis.
func TestL1ServesReadsByDefault(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	load := func(_ context.Context, k int) (string, error) { return faultValue(k), nil }
	get := func(c *cacheaside.Cache[int, string]) {
		if v, err := c.Get(ctx, 1); err != nil || v != faultValue(1) {
			t.Fatalf("Get(1) = %q, %v", v, err)
		}
	}

	c := newCacheOn(t, srv.Client(t), load, cacheaside.WithL1(cacheaside.L1{}), cacheaside.WithPrefix("l1:"))
	waitFor(t, 10*time.Second, "a healthy Get answered from the local cache", func() bool {
		get(c)
		return c.Stats().LocalHits > 0
	})
	before := c.Stats()
	for range 10 {
		get(c)
	}
	if s := c.Stats(); s.LocalHits-before.LocalHits != 10 || s.Hits != before.Hits {
		t.Errorf("10 more Gets: LocalHits +%d, Hits +%d, want +10, +0", s.LocalHits-before.LocalHits, s.Hits-before.Hits)
	}

	o := newCacheOn(t, srv.Client(t), load, cacheaside.WithL1(cacheaside.L1{OutageOnly: true}), cacheaside.WithPrefix("outage:"))
	for range 20 {
		get(o)
		time.Sleep(5 * time.Millisecond)
	}
	if s := o.Stats(); s.LocalHits != 0 {
		t.Errorf("OutageOnly: Stats().LocalHits = %d after 20 healthy Gets, want 0", s.LocalHits)
	}
}
