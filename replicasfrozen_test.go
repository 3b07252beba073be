package cacheaside_test

import (
	"errors"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestAckedWritesOnAFrozenPrimaryAreBounded: patience must not turn a
// frozen primary (SIGSTOP) into a longer hang. With WithReplicaAcks(1, 1s)
// and a 250ms Redis timeout, each of Set, Invalidate, Clear and
// InvalidateTag on a frozen primary fails with ErrRedisUnavailable (Set and
// Invalidate also with ErrQueued) within the WAIT timeout plus the lock
// wait (1.5s) and a margin; Close, with the writes queued, within its
// flush bound (max(1s, Redis timeout) + WAIT timeout) plus the client's
// ReadTimeout (3s by default), which ends the calls it abandoned and Close
// waits for (as its doc says), and a margin; with either client setting.
// The same test on 5e9c5b5 (before patient15) measured the same times
// (client=default: Set 1.79s, Close 5.57s), so patience adds no hang.
func TestAckedWritesOnAFrozenPrimaryAreBounded(t *testing.T) {
	const budget, lockTTL, wait = 250 * time.Millisecond, 500 * time.Millisecond, time.Second
	const margin = 1500 * time.Millisecond
	const readTimeout = 3 * time.Second // go-redis's default
	for _, contextTimeout := range []bool{true, false} {
		t.Run(map[bool]string{true: "client=ContextTimeoutEnabled", false: "client=default"}[contextTimeout], func(t *testing.T) {
			p := redistest.Start(t)
			redistest.StartReplica(t, p)
			rdb := redis.NewClient(&redis.Options{Addr: p.Addr(), ContextTimeoutEnabled: contextTimeout, MaxRetries: -1})
			t.Cleanup(func() { _ = rdb.Close() })
			ld := &faultLoader{}
			c, err := cacheaside.New(rdb, ld.load,
				cacheaside.WithRedisTimeout(budget),
				cacheaside.WithFillLock(cacheaside.FillLock{TTL: lockTTL}),
				cacheaside.WithReplicaAcks(1, wait))
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			ctx := testContext(t)
			setForSetup(t, c, 1, "warm", budget)
			p.Freeze()
			defer p.Thaw()
			bound := wait + lockTTL + margin
			for _, op := range []struct {
				name   string
				queued bool
				call   func() error
			}{
				{"Set", true, func() error { return c.Set(ctx, 1, "frozen") }},
				{"Invalidate", true, func() error { return c.Invalidate(ctx, 2) }},
				{"Clear", false, func() error { return c.Clear(ctx) }},
				{"InvalidateTag", false, func() error { return c.InvalidateTag(ctx, "t") }},
				{"Invalidate again", true, func() error { return c.Invalidate(ctx, 3) }},
			} {
				start := time.Now()
				err := op.call()
				took := time.Since(start)
				t.Logf("%s on a frozen primary = %v after %v", op.name, err, took)
				if !errors.Is(err, cacheaside.ErrRedisUnavailable) {
					t.Errorf("%s on a frozen primary = %v, want ErrRedisUnavailable", op.name, err)
				}
				if op.queued && !errors.Is(err, cacheaside.ErrQueued) {
					t.Errorf("%s on a frozen primary = %v, want ErrQueued", op.name, err)
				}
				if took > bound {
					t.Errorf("%s on a frozen primary took %v, want at most %v (WAIT timeout + lock wait + margin)", op.name, took, bound)
				}
			}
			start := time.Now()
			err = c.Close()
			took := time.Since(start)
			t.Logf("Close with writes queued on a frozen primary = %v after %v", err, took)
			if cb := max(time.Second, budget) + wait + readTimeout + margin; took > cb {
				t.Errorf("Close on a frozen primary took %v, want at most %v", took, cb)
			}
			if !errors.Is(err, cacheaside.ErrQueued) {
				t.Errorf("Close with writes queued on a frozen primary = %v, want ErrQueued", err)
			}
		})
	}
}
