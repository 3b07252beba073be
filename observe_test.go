package cacheaside_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// hookLog records what a Get hook received.
type hookLog struct {
	mu      sync.Mutex
	results []cacheaside.GetResult
	tooks   []time.Duration
}

func (h *hookLog) hook(_ context.Context, r cacheaside.GetResult, took time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.results = append(h.results, r)
	h.tooks = append(h.tooks, took)
}

// last returns the latest result, "" if none.
func (h *hookLog) last() cacheaside.GetResult {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.results) == 0 {
		return ""
	}
	return h.results[len(h.results)-1]
}

func (h *hookLog) take() []cacheaside.GetResult {
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.results
	h.results = nil
	return r
}

// TestGetHookResults checks that the Get hook sees one result per Get, and
// the right one: a miss, a hit, a cached not-found hit, a loader error, a
// local hit, a stale value and a cancelled Get.
func TestGetHookResults(t *testing.T) {
	srv := redistest.Start(t)
	var log hookLog
	db := &staleDB{}
	db.version.Store(1)
	c := newStaleCache(t, srv, func(ctx context.Context, k string) (int64, error) {
		switch k {
		case "gone":
			return 0, cacheaside.ErrNotFound
		case "bad":
			return 0, errors.New("database down")
		}
		return db.load(ctx, k)
	}, cacheaside.WithGetHook(log.hook))
	ctx := testContext(t)

	for _, k := range []string{"k", "k", "gone", "gone", "bad"} {
		_, _ = c.Get(ctx, k)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, _ = c.Get(cancelled, "k")
	want := []cacheaside.GetResult{
		cacheaside.ResultMiss, cacheaside.ResultHit, cacheaside.ResultMiss, cacheaside.ResultHit,
		cacheaside.ResultError, cacheaside.ResultError,
	}
	if got := log.take(); !slices.Equal(got, want) {
		t.Errorf("Get hook results = %v, want %v", got, want)
	}

	db.fail.Store(true)
	time.Sleep(afterExpiry)
	if v, err := c.Get(ctx, "k"); err != nil || v != 1 {
		t.Fatalf("Get(k) past expiry with the loader failing = %v, %v, want the stale 1", v, err)
	}
	if got := log.take(); !slices.Equal(got, []cacheaside.GetResult{cacheaside.ResultStale}) {
		t.Errorf("Get hook results for a stale answer = %v, want [stale]", got)
	}
	log.mu.Lock()
	defer log.mu.Unlock()
	for i, d := range log.tooks {
		if d <= 0 || d > testDeadline {
			t.Errorf("Get #%d took %v per the hook, want in (0, %v]", i+1, d, testDeadline)
		}
	}
}

// TestGetManyCallsGetHook checks that GetMany calls the Get hook once per
// distinct key with that key's result (duplicates once), including a
// GetMany cancelled before it started.
func TestGetManyCallsGetHook(t *testing.T) {
	srv := redistest.Start(t)
	var log hookLog
	c := newCache(t, srv, func(ctx context.Context, k string) (int64, error) {
		switch k {
		case "gone":
			return 0, cacheaside.ErrNotFound
		case "bad":
			return 0, errors.New("database down")
		}
		return 1, nil
	}, cacheaside.WithGetHook(log.hook))
	ctx := testContext(t)
	if _, err := c.Get(ctx, "hit"); err != nil {
		t.Fatalf("Get(hit) = %v", err)
	}
	log.take()

	_, _ = c.GetMany(ctx, []string{"hit", "new", "gone", "bad", "new", "hit"})
	got := log.take()
	slices.Sort(got)
	want := []cacheaside.GetResult{cacheaside.ResultError, cacheaside.ResultHit, cacheaside.ResultMiss, cacheaside.ResultMiss}
	if !slices.Equal(got, want) {
		t.Errorf("Get hook results of GetMany(hit, new, gone, bad, new, hit) = %v, want %v (sorted: hit, the miss of new and of gone, the error of bad)", got, want)
	}
	log.mu.Lock()
	for i, d := range log.tooks {
		if d <= 0 || d > testDeadline {
			t.Errorf("key #%d took %v per the hook, want in (0, %v]", i+1, d, testDeadline)
		}
	}
	log.mu.Unlock()

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	_, _ = c.GetMany(cancelled, []string{"a", "b", "a"})
	if got, want := log.take(), []cacheaside.GetResult{cacheaside.ResultError, cacheaside.ResultError}; !slices.Equal(got, want) {
		t.Errorf("Get hook results of a cancelled GetMany(a, b, a) = %v, want %v", got, want)
	}
}

// TestGetHookLocalHit checks the local_hit result, and that a panicking
// hook does not fail the Get.
func TestGetHookLocalHit(t *testing.T) {
	srv := redistest.Start(t)
	var log hookLog
	c := newCache(t, srv, func(context.Context, string) (string, error) { return "v", nil },
		cacheaside.WithLocalCache(100, time.Minute), cacheaside.WithLocalFirst(true),
		cacheaside.WithGetHook(log.hook))
	ctx := testContext(t)
	// The load fills Redis, and the local cache too once the Cache's
	// invalidation subscription is up (the L1 is trusted only then, and
	// the subscription may come up before or after the load ends: seen
	// both ways, and later still on a busy machine); until then Gets are
	// Redis hits. So: a miss, Redis hits, then local hits.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if v, err := c.Get(ctx, "k"); err != nil || v != "v" {
			t.Fatalf("Get(k) = %q, %v, want v, nil", v, err)
		}
		if log.last() == cacheaside.ResultLocalHit || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	got := log.take()
	ok := len(got) >= 2 && got[0] == cacheaside.ResultMiss && got[len(got)-1] == cacheaside.ResultLocalHit
	for i := 1; ok && i < len(got)-1; i++ {
		ok = got[i] == cacheaside.ResultHit
	}
	if !ok {
		t.Errorf("Get hook results = %v, want miss, then Redis hits, then a local hit", got)
	}

	p := newCache(t, srv, func(context.Context, string) (string, error) { return "v", nil },
		cacheaside.WithGetHook(func(context.Context, cacheaside.GetResult, time.Duration) { panic("hook") }))
	if v, err := p.Get(ctx, "k"); err != nil || v != "v" {
		t.Errorf("Get(k) with a panicking hook = %q, %v, want v, nil", v, err)
	}
}

// TestRedisKeyAndBreakerStates checks the accessors the inspector reads:
// RedisKey is where Get stores the value, and BreakerStates names the one
// node of a single server, or reports the breaker disabled.
func TestRedisKeyAndBreakerStates(t *testing.T) {
	srv := redistest.Start(t)
	c := newCache(t, srv, func(context.Context, int64) (string, error) { return "v", nil })
	ctx := testContext(t)
	if _, err := c.Get(ctx, 7); err != nil {
		t.Fatalf("Get(7) = %v", err)
	}
	if k := c.RedisKey(7); k != valueKey("7") {
		t.Errorf("RedisKey(7) = %q, want %q", k, valueKey("7"))
	}
	if _, _, ok := rawEntry(t, srv, c.RedisKey(7)); !ok {
		t.Errorf("no entry at RedisKey(7) = %q after Get(7)", c.RedisKey(7))
	}
	want := map[string]cacheaside.BreakerState{"": cacheaside.BreakerClosed}
	if got := c.BreakerStates(); len(got) != 1 || got[""] != want[""] {
		t.Errorf("BreakerStates() = %v, want %v", got, want)
	}
	off := newCache(t, srv, func(context.Context, int64) (string, error) { return "v", nil }, cacheaside.WithBreaker(0, 0))
	if got := off.BreakerStates(); len(got) != 1 || got[""] != cacheaside.BreakerDisabled {
		t.Errorf("BreakerStates() with WithBreaker(0, 0) = %v, want {\"\": disabled}", got)
	}
}

// BenchmarkGetHook measures what a Get hook adds to the hit path: the same
// warm Gets without a hook and with one that does nothing (two clock reads
// and the call).
func BenchmarkGetHook(b *testing.B) {
	srv := redistest.Start(b)
	for _, bc := range []struct {
		name string
		opts []cacheaside.Option
	}{
		{"hook=none", nil},
		{"hook=noop", []cacheaside.Option{cacheaside.WithGetHook(func(context.Context, cacheaside.GetResult, time.Duration) {})}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
			defer rdb.Close()
			// A Redis timeout that holds on a loaded machine, so that
			// the Sets that warm the keys do not time out.
			benchHitCache(b, rdb, 16, append([]cacheaside.Option{cacheaside.WithRedisTimeout(time.Second)}, bc.opts...)...)
		})
	}
}
