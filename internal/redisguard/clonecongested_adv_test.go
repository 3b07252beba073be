package redisguard

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestFrozenNodeUnderCloneWithFullPoolIsSilent: a timeout clone
// (Config.Clone, as cacheaside's WithTimeoutClone builds it, with
// PoolSize from Traits) and more concurrent calls than the pool has
// connections (here PoolSize 2 and 4 callers; cacheaside's Sets,
// Invalidates and lock calls beside its reads do this at the default
// PoolSize under load). The node freezes: every call is cut at the budget
// (a holder's read by the clone's socket timeout, then go-redis's retry
// backoff by the context; a waiter's pool wait by the context) and ends
// with a timeout. cutWasSlow (inline.go) counts a call cut at the budget
// as slow whenever g.congested(n) holds, and inflight >= PoolSize holds
// all along because the frozen node keeps every caller stuck: after the
// first few failures every call ends ErrSlow, excluded from the breaker,
// which never opens. Observed: after 6s, ~290-2000 calls, all but 2-6
// ErrSlow, breaker closed (pool 1/2/4, 3 to 32 callers; without
// Config.PoolSize it opens in ~120ms). The watched path holds (a full
// pool there is judged by judge's quiet window, not by congestion alone).
//
// Note: cacheaside's own Gets are mostly shielded (readbatch keeps one
// read per node in flight, and a read judged failing sheds the queued
// ones into guard.Failed, which opens the breaker), so this is the
// guard's contract more than a Get-path outage.
//
// Suggested fix: in cutWasSlow, let congestion excuse a cut only with a
// sign of life since start (n.lastReply >= start, as the jammed clause of
// judge requires "last >= w.start"), or only for waitedHere errors with
// a reply meanwhile (already handled above it); a frozen node gives none.
func TestFrozenNodeUnderCloneWithFullPoolIsSilent(t *testing.T) {
	srv := redistest.Start(t)
	budget := 40 * time.Millisecond
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: 2})
	t.Cleanup(func() { _ = rdb.Close() })
	clone := rdb.WithTimeout(budget)
	g := New(Config{Client: clone, Dials: rdb, Inline: true, Clone: true, PoolSize: 2, Budget: budget, Limit: 5 * time.Second,
		MaxAbandoned: 64, BreakerFailures: 5, BreakerCooldown: time.Minute})
	t.Cleanup(g.Close)
	ctx := context.Background()
	ping := func(ctx context.Context) error { return clone.Ping(ctx).Err() }
	for range 20 {
		setupCall(t, g, "PING", func() error { return g.Do(ctx, "k", ping) })
	}
	time.Sleep(10 * budget) // calm
	srv.Freeze()
	defer srv.Thaw()
	start := time.Now()
	var calls, slowN atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for g.State() != Open && time.Since(start) < 4*time.Second {
				if err := g.Do(ctx, "k", ping); errors.Is(err, ErrSlow) {
					slowN.Add(1)
				}
				calls.Add(1)
			}
		})
	}
	wg.Wait()
	if took := time.Since(start); g.State() != Open || took > 2*time.Second {
		t.Errorf("frozen node, timeout clone, 4 callers on a pool of 2: breaker %v after %v and %d calls (%d ErrSlow); want Open within 2s (Counts() = %+v)",
			g.State(), took, calls.Load(), slowN.Load(), g.Counts())
	}
}
