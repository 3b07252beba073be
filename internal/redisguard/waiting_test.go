package redisguard

import (
	"context"
	"errors"
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

// TestDoWaitingSlowNode: a node that holds a write (CLIENT PAUSE WRITE)
// past DoWaiting's wait plus the limit while it answers other calls
// promptly is slow, not failed, as for Do: the call ends with ErrSlow,
// which is no outage, and the breaker (one failure opens it) stays closed.
// On both kinds of client.
func TestDoWaitingSlowNode(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	// A 200ms budget: with 50ms, one read of the answering goroutine that
	// a loaded machine (load 28) kept past the budget was a failure that
	// opened the one-failure breaker ("after DoWaiting of a slow write,
	// breaker 1, want closed"), and with the reads then refused the
	// node answered nothing ("... = read tcp ...: i/o timeout after
	// 400ms, want ErrSlow").
	const budget, limit, wait = 200 * time.Millisecond, 500 * time.Millisecond, 100 * time.Millisecond
	const pause = 4 * (wait + limit)
	for _, inline := range []bool{false, true} {
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, ReadTimeout: 5 * time.Second, ContextTimeoutEnabled: inline})
		t.Cleanup(func() { _ = rdb.Close() })
		g := New(Config{Client: rdb, Budget: budget, Limit: limit, MaxAbandoned: 8, Inline: inline, BreakerFailures: 1, BreakerCooldown: time.Minute})
		if err := g.Do(ctx, "k", func(ctx context.Context) error { return rdb.Get(ctx, "k").Err() }); err != nil && !errors.Is(err, redis.Nil) {
			t.Fatalf("inline=%v: Get before the pause = %v", inline, err)
		}
		stopReads := answering(g, "k", 5*time.Millisecond, func(ctx context.Context) error { return rdb.Get(ctx, "other").Err() })
		if err := rdb.Do(ctx, "CLIENT", "PAUSE", pause.Milliseconds(), "WRITE").Err(); err != nil {
			t.Fatalf("CLIENT PAUSE: %v", err)
		}
		start := time.Now()
		err := g.DoWaiting(ctx, "k", wait, func(ctx context.Context) error {
			_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				p.Eval(ctx, "return redis.call('SET', KEYS[1], 'v')", []string{"k"})
				p.Do(ctx, "WAIT", 0, wait.Milliseconds())
				return nil
			})
			return err
		})
		took := time.Since(start)
		stopReads()
		if !errors.Is(err, ErrSlow) || IsOutage(err) || took > pause {
			t.Errorf("inline=%v: DoWaiting of a write held %v while the node answered reads = %v after %v, want ErrSlow (no outage) after about %v", inline, pause, err, took, wait+limit)
		}
		if st := g.State(); st != Closed {
			t.Errorf("inline=%v: after DoWaiting of a slow write, breaker %v, want closed", inline, st)
		}
		g.Close()
		time.Sleep(pause) // the pause ends before the next client's turn
	}
}
