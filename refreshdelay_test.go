package cacheaside_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestEarlyRefreshAfterSlowWrite: a value whose write reached Redis 50 ms
// after it was encoded (a loaded writer, a slow network) lives in Redis
// 50 ms longer than its header says. An early refresh must still run: it
// is not a refresh by another process, whose value would live about a
// whole TTL. Before, the refresh took any value living longer than its
// header's expiry plus one load time (20 ms here) for someone else's
// refresh and did nothing, at every hit: on a busy machine early refresh
// never fired for fast loaders (TestEarlyRefreshSkippedIsCounted saw 3
// skipped of 20 at a load of 14).
func TestEarlyRefreshAfterSlowWrite(t *testing.T) {
	srv := redistest.Start(t)
	delay := &delayScripts{}
	rdb := srv.Client(t)
	rdb.AddHook(delay)
	var loads atomic.Int64
	load := func(ctx context.Context, k string) (string, error) {
		loads.Add(1)
		time.Sleep(20 * time.Millisecond) // a load time for XFetch
		return "v", nil
	}
	// β = 10⁶ with a 20 ms load makes every hit due for a refresh.
	c := newCacheOn(t, rdb, load, cacheaside.WithTTL(time.Minute), cacheaside.WithEarlyRefresh(1e6))
	delay.by.Store(int64(50 * time.Millisecond))
	mustGetValue(t, c, "k", "v", "the first Get (a miss whose write is late)")
	delay.by.Store(0)
	waitFor(t, 10*time.Second, "a hit's early refresh loads the key again", func() bool {
		mustGetValue(t, c, "k", "v", "a hit")
		return loads.Load() >= 2
	})
	if s := c.Stats(); s.EarlyRefreshes == 0 {
		t.Errorf("Stats().EarlyRefreshes = 0 after a refresh load")
	}
}

// delayScripts holds every script call (EVALSHA, EVAL) for by
// nanoseconds before sending it.
type delayScripts struct{ by atomic.Int64 }

func (*delayScripts) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *delayScripts) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if d := h.by.Load(); d > 0 && (cmd.Name() == "evalsha" || cmd.Name() == "eval") {
			time.Sleep(time.Duration(d))
		}
		return next(ctx, cmd)
	}
}

func (*delayScripts) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
