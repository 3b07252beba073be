package cacheaside_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// getAll runs n Gets of key on c from n goroutines released together, and
// reports every one that did not return want with a nil error.
func getAll[K comparable, V comparable](t *testing.T, c *cacheaside.Cache[K, V], key K, want V, n int, start <-chan struct{}, wg *sync.WaitGroup) {
	ctx := testContext(t)
	for range n {
		wg.Go(func() {
			<-start
			if got, err := c.Get(ctx, key); err != nil || got != want {
				t.Errorf("Get(%v) = %v, %v; want %v, nil", key, got, err, want)
			}
		})
	}
}

// TestGetCoalescesColdKeyInProcess proves that concurrent Gets of one cold
// key on one Cache share one flight: one load, one lock acquisition.
func TestGetCoalescesColdKeyInProcess(t *testing.T) {
	srv := redistest.Start(t)
	const n = 200
	var loads atomic.Int64
	c := newCache(t, srv, func(ctx context.Context, key string) (string, error) {
		loads.Add(1)
		time.Sleep(20 * time.Millisecond)
		return "value of " + key, nil
	})
	start := make(chan struct{})
	var wg sync.WaitGroup
	getAll(t, c, "hot", "value of hot", n, start, &wg)
	close(start)
	wg.Wait()
	if got := loads.Load(); got != 1 {
		t.Errorf("%d concurrent Get(%q) called the loader %d times, want 1", n, "hot", got)
	}
	// The fill lock alone would also bound the loads to one; coalescing
	// means the other Gets never even reach it: one flight took the lock
	// and none waited on it.
	if s := c.Stats(); s.Hits+s.Misses != n || s.Loads != 1 || s.LockAcquired != 1 || s.LockWaits != 0 {
		t.Errorf("Stats() = %+v, want Hits + Misses = %d, Loads 1, LockAcquired 1, LockWaits 0", s, n)
	}
}

// TestGetCoalescesWarmKeyReads proves that concurrent Gets of a warm key
// share Redis reads: a Get that arrives while another Get's GET of the same
// key is in the air waits for that reply instead of sending its own. How
// many reads form depends on scheduling, so the bound is generous (under
// half the Gets); without coalescing every Get would send one GET.
func TestGetCoalescesWarmKeyReads(t *testing.T) {
	srv := redistest.Start(t)
	const n = 200
	var loads atomic.Int64
	c := newCache(t, srv, func(ctx context.Context, key string) (string, error) {
		loads.Add(1)
		return "", fmt.Errorf("loader called for warm key %q", key)
	})
	ctx := testContext(t)
	if err := c.Set(ctx, "warm", "stored"); err != nil {
		t.Fatalf("Set(%q) = %v, want nil", "warm", err)
	}
	srv.CLI(t, "CONFIG", "RESETSTAT")

	start := make(chan struct{})
	var wg sync.WaitGroup
	getAll(t, c, "warm", "stored", n, start, &wg)
	close(start)
	wg.Wait()
	get, evalsha, eval := commandCounts(t, srv)
	t.Logf("%d concurrent Gets of a warm key sent %d GETs", n, get)
	if get < 1 || get >= n/2 {
		t.Errorf("%d concurrent Gets of a warm key sent %d GETs, want between 1 and %d", n, get, n/2-1)
	}
	if evalsha+eval != 0 || loads.Load() != 0 {
		t.Errorf("warm Gets ran %d scripts and %d loads, want 0 and 0", evalsha+eval, loads.Load())
	}
	if s := c.Stats(); s.Hits != n {
		t.Errorf("Stats().Hits = %d after %d warm Gets, want %d", s.Hits, n, n)
	}
}

// TestGetDistinctKeysGetTheirOwnValues proves that flights of different
// keys never mix: every Get returns its own key's value, and returns. Many
// goroutines Get distinct keys while Redis is down, which makes each flight
// as short as it gets (the breaker skips Redis, the loader answers at
// once), so a flight's goroutine often finishes before its leader starts
// waiting on it. Each Get has a generous deadline so that a Get left
// waiting on a flight that already ended fails the test instead of hanging
// it.
func TestGetDistinctKeysGetTheirOwnValues(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	c := newCacheOn(t, rdb, func(ctx context.Context, id int64) (string, error) {
		return "value " + strconv.FormatInt(id, 10), nil
	})
	srv.Kill()
	const workers, perWorker = 8, 500
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				id := int64(w*perWorker + i)
				want := "value " + strconv.FormatInt(id, 10)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				got, err := c.Get(ctx, id)
				cancel()
				if err != nil || got != want {
					t.Errorf("Get(%v) = %q, %v; want %q, nil", id, got, err, want)
					return // one report per worker; a hang costs 5s each
				}
			}
		})
	}
	wg.Wait()
}

// TestGetLoadsOnceAcrossCaches proves the fleet-wide bound: four Caches,
// each with its own client like four processes, with 250 goroutines each on
// one cold key, call the loader once in total; the others wait on the fill
// lock and read the holder's value. Three keys run at once.
func TestGetLoadsOnceAcrossCaches(t *testing.T) {
	srv := redistest.Start(t)
	const instances, perInstance = 4, 250
	keys := []int64{1, 2, 3}
	loads := make(map[int64]*atomic.Int64)
	for _, k := range keys {
		loads[k] = new(atomic.Int64)
	}
	load := func(ctx context.Context, id int64) (item, error) {
		loads[id].Add(1)
		time.Sleep(50 * time.Millisecond)
		return item{ID: id, Name: "product " + strconv.FormatInt(id, 10)}, nil
	}
	caches := make([]*cacheaside.Cache[int64, item], instances)
	for i := range caches {
		caches[i] = newCache(t, srv, load)
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, k := range keys {
		for _, c := range caches {
			getAll(t, c, k, item{ID: k, Name: "product " + strconv.FormatInt(k, 10)}, perInstance, start, &wg)
		}
	}
	close(start)
	wg.Wait()

	var total cacheaside.Stats
	for _, c := range caches {
		s := c.Stats()
		total.Hits += s.Hits
		total.Misses += s.Misses
		total.Loads += s.Loads
		total.LockAcquired += s.LockAcquired
	}
	for _, c := range caches {
		total.RedisErrors += c.Stats().RedisErrors
	}
	for _, k := range keys {
		if n := loads[k].Load(); n != 1 {
			t.Errorf("%d Gets of key %d on %d Caches called the loader %d times, want 1", instances*perInstance, k, instances, n)
		}
	}
	if want := uint64(len(keys) * instances * perInstance); total.Hits+total.Misses != want || total.Loads != 3 || total.LockAcquired != 3 {
		t.Errorf("summed Stats() = %+v, want Hits + Misses = %d, Loads 3, LockAcquired 3", total, want)
	}
	for _, k := range keys {
		if ex := srv.CLI(t, "EXISTS", valueKey(strconv.FormatInt(k, 10))+":lock"); ex != "0" {
			t.Errorf("lock of key %d still held after every Get returned", k)
		}
	}
}

// TestGetTakesOverLockOfDeadHolder proves that a waiter takes over a fill
// lock whose holder died: the lock, set by hand as a crashed process would
// leave it, expires, and the waiter loads, fills and releases the lock.
func TestGetTakesOverLockOfDeadHolder(t *testing.T) {
	srv := redistest.Start(t)
	var loads atomic.Int64
	c := newCache(t, srv, func(ctx context.Context, key string) (string, error) {
		loads.Add(1)
		return "fresh " + key, nil
	}, cacheaside.WithLockTTL(500*time.Millisecond)) // the lock wait has no bound of its own

	locked := time.Now()
	srv.CLI(t, "SET", "ca:{k}:lock", "token-of-a-dead-process", "PX", "500")
	time.Sleep(20 * time.Millisecond) // the lock expires inside the waiter's wait, not at its edge
	got, err := c.Get(testContext(t), "k")
	if err != nil || got != "fresh k" {
		t.Fatalf("Get(%q) = %q, %v; want %q, nil", "k", got, err, "fresh k")
	}
	// The Redis clock is the machine's clock: the lock cannot have been
	// taken over before it expired 500ms after it was set.
	if waited := time.Since(locked); waited < 450*time.Millisecond {
		t.Errorf("Get(%q) returned %v after the lock was set, want at least its TTL of 500ms", "k", waited)
	}
	if n := loads.Load(); n != 1 {
		t.Errorf("loader called %d times, want 1", n)
	}
	if s := c.Stats(); s.LockWaits < 1 || s.LockAcquired != 1 || s.LockWaitTimeouts != 0 {
		t.Errorf("Stats() = %+v, want LockWaits ≥ 1, LockAcquired 1 (taken over), LockWaitTimeouts 0", s)
	}
	if v, ok := storedValue[string](t, srv, "ca:{k}"); !ok || v != "fresh k" {
		t.Errorf("Redis ca:{k} = %q (present %v), want %q", v, ok, "fresh k")
	}
	if ex := srv.CLI(t, "EXISTS", "ca:{k}:lock"); ex != "0" {
		t.Errorf("EXISTS ca:{k}:lock after the takeover = %s, want 0 (released after the fill)", ex)
	}
}

// TestGetLoadsAloneWhenLockWaitRunsOut proves that a waiter whose lock wait
// is shorter than the holder's load loads by itself, returns its value and
// writes it (no Invalidate happened and no value exists), without touching
// the holder's lock.
func TestGetLoadsAloneWhenLockWaitRunsOut(t *testing.T) {
	srv := redistest.Start(t)
	var loads atomic.Int64
	load := func(ctx context.Context, key string) (string, error) {
		loads.Add(1)
		return "fresh " + key, nil
	}
	c := newCache(t, srv, load, cacheaside.WithLockWait(50*time.Millisecond))
	srv.CLI(t, "SET", "ca:{k}:lock", "token-of-a-slow-process", "PX", "60000")

	got, err := c.Get(testContext(t), "k")
	if err != nil || got != "fresh k" {
		t.Fatalf("Get(%q) = %q, %v; want %q, nil", "k", got, err, "fresh k")
	}
	if s := c.Stats(); s.LockWaits != 1 || s.LockWaitTimeouts != 1 || s.LockAcquired != 0 || loads.Load() != 1 {
		t.Errorf("Stats() = %+v, loads %d; want LockWaits 1, LockWaitTimeouts 1, LockAcquired 0, 1 load", s, loads.Load())
	}
	if v, ok := storedValue[string](t, srv, "ca:{k}"); !ok || v != "fresh k" {
		t.Errorf("Redis ca:{k} = %q (present %v), want %q written by the unlocked load", v, ok, "fresh k")
	}
	if tok := srv.CLI(t, "GET", "ca:{k}:lock"); tok != "token-of-a-slow-process" {
		t.Errorf("GET ca:{k}:lock = %q, want the holder's token untouched", tok)
	}
	other := newCache(t, srv, load)
	if got, err := other.Get(testContext(t), "k"); err != nil || got != "fresh k" || loads.Load() != 1 {
		t.Errorf("Get(%q) on another Cache = %q, %v after %d loads; want %q, nil from Redis", "k", got, err, loads.Load(), "fresh k")
	}
}

// TestStoredTTLIsJittered proves that stored values live a jittered TTL in
// milliseconds: every PTTL is within [TTL·(1−f), TTL·(1+f)] (less the time
// since the fill), not rounded to seconds, and the TTLs spread out.
func TestStoredTTLIsJittered(t *testing.T) {
	srv := redistest.Start(t)
	const (
		ttl    = 1500 * time.Millisecond
		jitter = 0.2
		keys   = 100
	)
	c := newCache(t, srv, func(ctx context.Context, id int64) (int64, error) { return id, nil },
		cacheaside.WithTTL(ttl), cacheaside.WithJitter(jitter))
	lo, hi := int64(float64(ttl.Milliseconds())*(1-jitter)), int64(float64(ttl.Milliseconds())*(1+jitter))
	minTTL, maxTTL := hi, lo
	ctx := testContext(t)
	for id := range int64(keys) {
		before := time.Now()
		if got, err := c.Get(ctx, id); err != nil || got != id {
			t.Fatalf("Get(%v) = %v, %v; want %v, nil", id, got, err, id)
		}
		ms := pttl(t, srv, valueKey(strconv.FormatInt(id, 10)))
		elapsed := time.Since(before).Milliseconds() + 1
		if ms < lo-elapsed || ms > hi {
			t.Errorf("PTTL of key %d = %dms %dms after the Get began, want within [%d, %d]", id, ms, elapsed, lo-elapsed, hi)
		}
		minTTL, maxTTL = min(minTTL, ms), max(maxTTL, ms)
	}
	if maxTTL-minTTL <= 100 {
		t.Errorf("PTTLs of %d keys span [%d, %d]ms, want a spread over 100ms with jitter %v", keys, minTTL, maxTTL, jitter)
	}
}
