package redisguard

import (
	"context"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestDoWaiting: a call that the server holds on purpose (WAIT for a
// replica that does not exist) is waited for past the budget, up to its
// wait, and succeeds, where Do would have cut it at the budget; on a
// frozen node it ends with an outage error (ErrIncomplete, or the
// socket's timeout on a client that honours deadlines) at about the wait plus the
// limit, on both kinds of client.
func TestDoWaiting(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	const budget, limit, wait = 50 * time.Millisecond, time.Second, 300 * time.Millisecond
	for _, inline := range []bool{false, true} {
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, ReadTimeout: 5 * time.Second, ContextTimeoutEnabled: inline})
		t.Cleanup(func() { _ = rdb.Close() })
		g := New(Config{Client: rdb, Budget: budget, Limit: limit, MaxAbandoned: 8, Inline: inline})
		waitCall := func(ctx context.Context) error {
			return rdb.Do(ctx, "WAIT", 1, wait.Milliseconds()).Err()
		}
		start := time.Now()
		if err := g.DoWaiting(ctx, "k", wait, waitCall); err != nil {
			t.Fatalf("inline=%v: DoWaiting(WAIT 1 %v) = %v, want nil", inline, wait, err)
		}
		if took := time.Since(start); took < wait {
			t.Errorf("inline=%v: DoWaiting(WAIT) returned after %v, before the server's %v", inline, took, wait)
		}
		srv.Freeze()
		start = time.Now()
		err := g.DoWaiting(ctx, "k", wait, waitCall)
		took := time.Since(start)
		srv.Thaw()
		if !IsOutage(err) || took < wait || took > 5*(wait+limit) {
			t.Errorf("inline=%v: DoWaiting on a frozen node = %v after %v, want an outage error after about %v", inline, err, took, wait+limit)
		}
		g.Close()
	}
}
