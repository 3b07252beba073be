package cacheaside_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// panicHook is a go-redis hook that panics on the commands it is armed
// for, as a buggy tracing or metrics hook might.
type panicHook struct {
	armed  atomic.Bool
	match  func(name string) bool
	panics atomic.Int64
}

func (*panicHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *panicHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.armed.Load() && h.match(cmd.Name()) {
			h.panics.Add(1)
			panic("hook exploded on " + cmd.Name())
		}
		return next(ctx, cmd)
	}
}

func (h *panicHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.armed.Load() {
			for _, c := range cmds {
				if h.match(c.Name()) {
					h.panics.Add(1)
					panic("hook exploded on a pipeline with " + c.Name())
				}
			}
		}
		return next(ctx, cmds)
	}
}

// TestHookPanicIsARedisFault: a go-redis hook that panics inside one of
// the cache's Redis calls is a failed Redis call, like any other fault:
// Get answers from the loader, the process does not crash, and the key's
// flight is not left open (a later Get, once the hook behaves, reads Redis
// again). Run with a client that honours context deadlines (the call runs
// on the caller's goroutine) and with a default client (the call runs on a
// goroutine of the guard's, where an unrecovered panic kills the process).
func TestHookPanicIsARedisFault(t *testing.T) {
	for _, ctxTimeout := range []bool{true, false} {
		name := "default-client"
		if ctxTimeout {
			name = "ContextTimeoutEnabled"
		}
		t.Run(name, func(t *testing.T) {
			srv := redistest.Start(t)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: ctxTimeout})
			t.Cleanup(func() { _ = rdb.Close() })
			hook := &panicHook{match: func(name string) bool { return name == "get" || name == "mget" || strings.HasPrefix(name, "eval") }}
			rdb.AddHook(hook)

			var loads atomic.Int64
			load := func(ctx context.Context, id int64) (item, error) {
				loads.Add(1)
				return item{ID: id, Name: "row"}, nil
			}
			c := newCacheOn(t, rdb, load, cacheaside.WithBreaker(0, 0))
			ctx := testContext(t)

			hook.armed.Store(true)
			for i := range 3 {
				got := await(t, getAsync(ctx, c, 7), "Get with a panicking hook")
				if got.err != nil || got.val.ID != 7 {
					t.Fatalf("Get #%d with a panicking hook = %+v, %v; want {7 row}, nil", i, got.val, got.err)
				}
			}
			many, err := c.GetMany(ctx, []int64{7, 8})
			if err != nil || many[7].ID != 7 || many[8].ID != 8 {
				t.Fatalf("GetMany with a panicking hook = %v, %v; want keys 7 and 8, nil", many, err)
			}
			if hook.panics.Load() == 0 {
				t.Fatal("the hook never panicked: the test did not exercise a panic")
			}
			if n := c.Stats().RedisErrors; n == 0 {
				t.Errorf("Stats().RedisErrors = 0 after hook panics, want > 0")
			}

			// The hook behaves again: the key is not stuck, the next Get
			// loads once under the lock and fills Redis; the one after hits.
			hook.armed.Store(false)
			before := loads.Load()
			if got := await(t, getAsync(ctx, c, 7), "Get after the hook recovered"); got.err != nil || got.val.ID != 7 {
				t.Fatalf("Get after the hook recovered = %+v, %v; want {7 row}, nil", got.val, got.err)
			}
			if got := await(t, getAsync(ctx, c, 7), "second Get after the hook recovered"); got.err != nil || got.val.ID != 7 {
				t.Fatalf("second Get = %+v, %v; want {7 row}, nil", got.val, got.err)
			}
			if n := loads.Load() - before; n != 1 {
				t.Errorf("loads after the hook recovered = %d, want 1 (then a Redis hit)", n)
			}
			if _, ok := storedValue[item](t, srv, valueKey("7")); !ok {
				t.Errorf("Redis holds no value for key 7 after the hook recovered")
			}
		})
	}
}
