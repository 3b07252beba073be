package cacheaside_test

import (
	"sync"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// Caches built on one go-redis client with the same guard settings share
// one Redis guard (issue 13 item 4): one set of per-node breakers that
// learns of an outage once for all of them, one abandoned-call budget, one
// dial hook.

// shareBudget is the default WithRedisTimeout, which the sharing tests use.
const shareBudget = 100 * time.Millisecond

// TestShareBreakerOpensOnceForAllCaches builds ten Caches with default
// options on one client, kills -9 Redis and gets distinct keys round-robin
// over the ten: the breaker opens after 5 failures in all, not 5 per
// Cache, and every Cache then reports it open.
func TestShareBreakerOpensOnceForAllCaches(t *testing.T) {
	srv := redistest.Start(t)
	rdb := newFaultClient(t, srv.Addr())
	ld := &faultLoader{}
	caches := make([]*cacheaside.Cache[int, string], 10)
	for i := range caches {
		caches[i] = newFaultCache(t, rdb, ld.load)
	}
	keys := faultKeys(0, 29)
	for i, k := range keys {
		mustGet(t, caches[i%len(caches)], k) // warm: every cache connected
	}
	srv.Kill()

	var waited int
	var took []time.Duration
	killed := time.Now()
	for i, k := range keys {
		d := mustGet(t, caches[i%len(caches)], k)
		took = append(took, d)
		if d >= shareBudget/2 {
			waited++
		}
	}
	t.Logf("30 Gets round-robin over 10 Caches after Redis was killed: %v", took)
	if waited > 5+2 {
		t.Errorf("%d Gets waited %v or more, want at most 7: the Caches share one breaker", waited, shareBudget/2)
	}
	// The default cooldown is 500 ms: a machine so loaded that the Gets
	// took longer may find the breaker half-open, which is still not
	// closed and still opened once.
	late := time.Since(killed) >= 400*time.Millisecond
	for i, c := range caches {
		s := c.Stats()
		if s.BreakerOpens == 0 || (s.Breaker != cacheaside.BreakerOpen && !(late && s.Breaker == cacheaside.BreakerHalfOpen)) {
			t.Errorf("cache %d: Stats().Breaker = %v, BreakerOpens = %d, want open, at least 1 (the shared breaker opened after 5 failures in all)", i, s.Breaker, s.BreakerOpens)
		}
	}
	recoverServer(t, srv, rdb)
}

// TestShareNotWithOtherSettings builds two Caches on one client with
// different WithRedisTimeout: they do not share, so opening one's breaker
// leaves the other's closed.
func TestShareNotWithOtherSettings(t *testing.T) {
	srv := redistest.Start(t)
	rdb := newFaultClient(t, srv.Addr())
	ld := &faultLoader{}
	a := newFaultCache(t, rdb, ld.load, cacheaside.WithRedisTimeout(shareBudget), cacheaside.WithBreaker(5, time.Minute))
	b := newFaultCache(t, rdb, ld.load, cacheaside.WithRedisTimeout(2*shareBudget), cacheaside.WithBreaker(5, time.Minute))
	keys := faultKeys(0, 9)
	mustGetAll(t, a, keys)
	mustGetAll(t, b, keys)
	srv.Kill()
	mustGetAll(t, a, keys)
	if s := a.Stats(); s.Breaker != cacheaside.BreakerOpen {
		t.Errorf("a: Stats().Breaker = %v after 10 failed Gets, want open", s.Breaker)
	}
	if s := b.Stats(); s.Breaker != cacheaside.BreakerClosed || s.BreakerOpens != 0 {
		t.Errorf("b: Stats().Breaker = %v, BreakerOpens = %d, want closed, 0: another WithRedisTimeout gets its own guard", s.Breaker, s.BreakerOpens)
	}
	recoverServer(t, srv, rdb)
}

// TestShareCloseOneKeepsOthers closes some of the Caches that share a
// guard: the others go on reading Redis and still learn of an outage; the
// last Close stops everything (goleak in TestMain).
func TestShareCloseOneKeepsOthers(t *testing.T) {
	srv := redistest.Start(t)
	rdb := newFaultClient(t, srv.Addr())
	ld := &faultLoader{}
	var caches []*cacheaside.Cache[int, string]
	for range 3 {
		c, err := cacheaside.New(rdb, ld.load)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		caches = append(caches, c)
	}
	keys := faultKeys(0, 9)
	mustGetAll(t, caches[0], keys)
	for _, c := range caches[:2] {
		if err := c.Close(); err != nil {
			t.Fatalf("Close() = %v", err)
		}
	}
	last := caches[2]
	loads := ld.calls.Load()
	mustGetAll(t, last, keys) // Redis hits through the shared guard
	if got := ld.calls.Load() - loads; got != 0 {
		t.Errorf("%d loads after two of three Caches closed, want 0: the last one reads Redis", got)
	}
	srv.Kill()
	mustGetAll(t, last, keys)
	if s := last.Stats(); s.Breaker != cacheaside.BreakerOpen {
		t.Errorf("Stats().Breaker = %v after Redis was killed, want open", s.Breaker)
	}
	if err := last.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	recoverServer(t, srv, rdb)
}

// TestShareConcurrentNewClose builds and closes many Caches on one client
// at once, each getting a key in between (run under -race).
func TestShareConcurrentNewClose(t *testing.T) {
	srv := redistest.Start(t)
	rdb := newFaultClient(t, srv.Addr())
	ld := &faultLoader{}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 10 {
				opts := []cacheaside.Option{}
				if i%2 == 1 {
					opts = append(opts, cacheaside.WithRedisTimeout(2*shareBudget))
				}
				c, err := cacheaside.New(rdb, ld.load, opts...)
				if err != nil {
					t.Errorf("New: %v", err)
					return
				}
				k := w*10 + i
				ctx := testContext(t)
				if v, err := c.Get(ctx, k); err != nil || v != faultValue(k) {
					t.Errorf("Get(%d) = %q, %v", k, v, err)
				}
				_ = c.Stats()
				if err := c.Close(); err != nil {
					t.Errorf("Close() = %v", err)
				}
			}
		})
	}
	wg.Wait()
}
