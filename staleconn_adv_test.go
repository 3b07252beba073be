package cacheaside_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestFreezeAfterRestartOpensBreaker: Redis restarts (every pooled
// connection gets the server's FIN), traffic resumes lighter than before
// (go-redis sweeps at most 3 stale connections per Get, so the rest stay
// in the idle pool), and later Redis freezes. The freeze must still open
// the breaker within a few budgets, and Gets fall back within about the
// budget. It shows a defect of redisguard/unread.go: a FIN advances
// TCP_INFO's tcpi_bytes_received by one, so every stale connection looks
// like one holding an unread reply, and every call to the frozen node is
// judged slow (watched: waits to the limit, then overdue; timeout clone:
// ErrSlow) instead of silent.
func TestFreezeAfterRestartOpensBreaker(t *testing.T) {
	for _, m := range budgetModes {
		t.Run(m.name, func(t *testing.T) {
			srv := redistest.Start(t)
			rdb := srv.Client(t)
			ld := &faultLoader{}
			c := newFaultCache(t, rdb, ld.load, m.opt,
				cacheaside.WithRedisTimeout(faultBudget),
				cacheaside.WithBreaker(3, time.Minute))
			// A burst: the pool grows to several connections.
			var wg sync.WaitGroup
			for k := range 32 {
				wg.Go(func() { mustGet(t, c, k) })
			}
			wg.Wait()
			ctx := context.Background()
			var held []*redis.Conn
			for range 8 {
				cn := rdb.Conn()
				if err := cn.Ping(ctx).Err(); err != nil {
					t.Fatal(err)
				}
				held = append(held, cn)
			}
			for _, cn := range held {
				_ = cn.Close()
			}
			if n := rdb.PoolStats().IdleConns; n < 6 {
				t.Fatalf("only %d idle connections after the burst, want at least 6", n)
			}
			srv.Restart()
			time.Sleep(50 * time.Millisecond) // the FINs arrive
			// Light traffic after the restart.
			waitFor(t, 10*time.Second, "Redis answers again", func() bool {
				ctx, cancel := context.WithTimeout(context.Background(), faultGetTimeout)
				defer cancel()
				_, err := c.Get(ctx, 1000)
				return err == nil && c.Stats().Breaker == cacheaside.BreakerClosed && rdb.Ping(ctx).Err() == nil
			})
			for k := range 5 {
				mustGet(t, c, 2000+k)
			}
			t.Logf("pool after the restart: %+v", *rdb.PoolStats())
			time.Sleep(3 * faultBudget) // calm again
			thaw := freezeServer(t, srv)
			defer thaw()
			start := time.Now()
			var slowest time.Duration
			for k := 3000; c.Stats().Breaker != cacheaside.BreakerOpen && time.Since(start) < 8*time.Second; k++ {
				if took := mustGet(t, c, k); took > slowest {
					slowest = took
				}
			}
			took := time.Since(start)
			s := c.Stats()
			if s.Breaker != cacheaside.BreakerOpen || took > 2*time.Second || slowest > faultBudget+faultSlack {
				t.Errorf("frozen Redis after a restart: breaker %v after %v, slowest Get %v; want open within 2s, Gets within %v (Stats() = %+v)",
					s.Breaker, took, slowest, faultBudget+faultSlack, s)
			}
		})
	}
}
