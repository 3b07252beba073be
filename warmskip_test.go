package cacheaside_test

import (
	"context"
	"net"
	"slices"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// readFail is a go-redis hook that fails, once armed, the next GET or
// MGET that names key (alone or in a pipeline) with a reset connection,
// without sending it: one failed read, Redis itself healthy.
type readFail struct {
	key   string
	armed atomic.Bool
}

var errReset = &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}

func (h *readFail) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *readFail) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.fails(cmd) {
			cmd.SetErr(errReset)
			return errReset
		}
		return next(ctx, cmd)
	}
}

func (h *readFail) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if slices.ContainsFunc(cmds, h.fails) {
			for _, cmd := range cmds {
				cmd.SetErr(errReset)
			}
			return errReset
		}
		return next(ctx, cmds)
	}
}

// fails reports whether cmd is the read to fail, and disarms the hook.
func (h *readFail) fails(cmd redis.Cmder) bool {
	if n := cmd.Name(); n != "get" && n != "mget" {
		return false
	}
	if !slices.Contains(cmd.Args()[1:], any(h.key)) {
		return false
	}
	return h.armed.CompareAndSwap(true, false)
}

// TestWarmUpAfterOneFailedReadWritesRedis: the warm-up's acquire of key 1
// takes the lock on a healthy Redis; before its reply arrives, one Get of
// key 1 has its Redis read fail (a reset connection, once), loads the key
// without the lock and writes nothing, as it must; L1 keeps the value.
// Redis stays up. Warm documents that it writes its keys to Redis unless
// they are there or another process holds their lock: neither holds, so
// once Warm has returned Redis must hold key 1.
func TestWarmUpAfterOneFailedReadWritesRedis(t *testing.T) {
	srv := redistest.Start(t)
	var loads atomic.Int64
	load := func(ctx context.Context, k int) (string, error) {
		if k == 1 {
			loads.Add(1)
		}
		return faultValue(k), nil
	}
	hold := newScriptHold(valueKey("1"))
	fail := &readFail{key: valueKey("1")}
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	rdb.AddHook(hold)
	rdb.AddHook(fail)
	t.Cleanup(hold.unhold)
	c := newFaultCache(t, rdb, load,
		cacheaside.WithRedisTimeout(holdBudget),
		cacheaside.WithL1(cacheaside.L1{OutageOnly: true}),
		cacheaside.WithRestartCheck(0),
		cacheaside.WithWarmupKeys(1))
	mustGet(t, c, 0)
	ctx := testContext(t)
	hold.armed.Store(true)
	warmed := make(chan error, 1)
	go func() { warmed <- c.Warm(ctx) }()
	await(t, hold.ran, "the warm-up's acquire of key 1")
	fail.armed.Store(true)
	mustGet(t, c, 1)
	if fail.armed.Load() {
		t.Fatal("Get(1) did not read Redis: the failed read under test did not happen")
	}
	if n := loads.Load(); n != 1 {
		t.Fatalf("Get(1) after its failed read: key 1 loaded %d times, want 1", n)
	}
	hold.unhold()
	if err := await(t, warmed, "Warm"); err != nil {
		t.Fatalf("Warm = %v, want nil (Redis is up)", err)
	}
	if _, ok := storedValue[string](t, srv, valueKey("1")); !ok {
		t.Errorf("after Warm returned nil on a healthy Redis, Redis has no value for key 1 (loads %d, stats %+v); want the warm-up to write it", loads.Load(), c.Stats())
	}
}
