package cacheaside_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// The tests of this file kill Redis (kill -9) between a warm-up's taking
// a key's fill lock and its load of the key: the acquire script has run,
// its reply has not reached the warm-up yet. A Get of the key meanwhile
// reads the dead Redis and loads the key itself, without the lock, and L1
// keeps the result; its flight ends before the warm-up joins the key's
// flight. examples/outage saw the warm-up then lead a new flight and load
// the key again ("instance 1, key 5: 2 loads", the second in
// loadAndFillOnce < warmKey.func1), against WithL1's one load per key per
// process during an outage.

// scriptHold is a go-redis hook that holds the reply of one script call
// on a key. Once armed, the next EVALSHA or EVAL whose first key is key,
// alone or in a pipeline, runs on the server as usual; then its caller
// waits until release (or until the call's context ends), so that the
// reply is delivered late.
type scriptHold struct {
	key     string
	armed   atomic.Bool
	ran     chan struct{} // closed when the held script has run
	release chan struct{}
	once    sync.Once
}

func newScriptHold(key string) *scriptHold {
	return &scriptHold{key: key, ran: make(chan struct{}), release: make(chan struct{})}
}

func (h *scriptHold) unhold() { h.once.Do(func() { close(h.release) }) }

func (h *scriptHold) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *scriptHold) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.hold(ctx, cmd)
		return err
	}
}

func (h *scriptHold) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		h.hold(ctx, cmds...)
		return err
	}
}

// hold waits for release if one of cmds is the script call to hold.
func (h *scriptHold) hold(ctx context.Context, cmds ...redis.Cmder) {
	if !slices.ContainsFunc(cmds, h.matches) || !h.armed.CompareAndSwap(true, false) {
		return
	}
	close(h.ran)
	select {
	case <-h.release:
	case <-ctx.Done():
	}
}

// matches reports whether cmd runs a script whose first key is h.key:
// EVALSHA sha numkeys key ... (or EVAL script numkeys key ...).
func (h *scriptHold) matches(cmd redis.Cmder) bool {
	args := cmd.Args()
	return (cmd.Name() == "evalsha" || cmd.Name() == "eval") && len(args) > 3 && args[3] == h.key
}

// holdWarmCache returns a Cache over srv whose client holds the reply of
// the first script call on key 1 once the hook is armed, with an L1 for
// the outage and no automatic warm-up, plus opts. The held acquire must
// succeed, as it did in examples/outage, though Redis dies meanwhile: the
// client honours context deadlines, so that the guard runs the call on
// its caller's goroutine (inline), where a dial refused elsewhere (the
// Get's, the backplane's) does not cut it as it cuts a watched call, and
// the Redis timeout (holdBudget) outlasts the hold. Before it returns, a
// Get of key 0 connects it, loads the scripts and creates the prefix's
// clock.
func holdWarmCache(t *testing.T, srv *redistest.Server, hold *scriptHold, load cacheaside.LoadFunc[int, string], opts ...cacheaside.Option) *cacheaside.Cache[int, string] {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	rdb.AddHook(hold)
	t.Cleanup(hold.unhold)
	c := newFaultCache(t, rdb, load, append([]cacheaside.Option{
		cacheaside.WithRedisTimeout(holdBudget),
		cacheaside.WithL1(cacheaside.L1{OutageOnly: true}),
		cacheaside.WithRestartCheck(0), // no automatic warm-up to race with
	}, opts...)...)
	mustGet(t, c, 0)
	return c
}

// holdBudget is the Redis timeout of holdWarmCache's Caches: far above
// the hold, which lasts as long as a Get of a killed Redis (about 2s on an
// idle machine: go-redis retries the refused dial, then the command).
const holdBudget = 15 * time.Second

// killDuringWarmAcquire starts c.Warm once hold is armed, kills srv when
// the warm-up's acquire of key 1 has run on it, Gets key 1 during the
// outage (a load without the lock, which L1 keeps), then lets the
// acquire's reply through and returns Warm's error. loads counts the
// loads of key 1: the Get's must be the only one until the release.
func killDuringWarmAcquire(t *testing.T, srv *redistest.Server, c *cacheaside.Cache[int, string], hold *scriptHold, loads func() int64) error {
	t.Helper()
	ctx := testContext(t)
	locks := c.Stats().LockAcquired
	hold.armed.Store(true)
	warmed := make(chan error, 1)
	go func() { warmed <- c.Warm(ctx) }()
	await(t, hold.ran, "the warm-up's acquire of key 1")
	srv.Kill()
	if v, err := c.Get(ctx, 1); err != nil || v != faultValue(1) {
		t.Fatalf("Get(1) after the kill = %q, %v, want %q, nil", v, err, faultValue(1))
	}
	if n := loads(); n != 1 {
		t.Fatalf("Get(1) after the kill: key 1 loaded %d times, want 1 (the Get's, without the lock)", n)
	}
	hold.unhold()
	err := await(t, warmed, "Warm")
	if n := c.Stats().LockAcquired - locks; n == 0 {
		// The window under test was not reached: the acquire failed.
		t.Fatalf("the warm-up took no fill lock (Warm = %v): its acquire of key 1 must succeed", err)
	}
	return err
}

// checkWarmDuringKill fails the test unless Warm's error err is nil or
// matches ErrRedisUnavailable (its key could not be written).
func checkWarmDuringKill(t *testing.T, err error) {
	t.Helper()
	if err != nil && !errors.Is(err, cacheaside.ErrRedisUnavailable) {
		t.Errorf("Warm during the kill = %v, want nil or an error matching ErrRedisUnavailable", err)
	}
}

// TestWarmUpLockTakenAsRedisDiesLoadsOnce: the warm-up's acquire of key 1
// takes the lock; Redis is killed before its reply arrives; a Get of key
// 1 loads it without the lock (L1 keeps it). When the reply arrives the
// warm-up leads the key's flight, and must find the copy this process
// loaded meanwhile instead of loading the key again.
func TestWarmUpLockTakenAsRedisDiesLoadsOnce(t *testing.T) {
	srv := redistest.Start(t)
	var armed atomic.Bool
	var loads atomic.Int64
	load := func(ctx context.Context, k int) (string, error) {
		if k == 1 && armed.Load() {
			loads.Add(1)
		}
		return faultValue(k), nil
	}
	hold := newScriptHold(valueKey("1"))
	c := holdWarmCache(t, srv, hold, load, cacheaside.WithWarmupKeys(1))
	armed.Store(true)
	err := killDuringWarmAcquire(t, srv, c, hold, loads.Load)
	t.Logf("Warm during the kill: %v", err)
	checkWarmDuringKill(t, err)
	if n := loads.Load(); n != 1 {
		t.Errorf("key 1 was loaded %d times by a Get and the warm-up during the outage, want 1", n)
	}
	mustGet(t, c, 1)
	if n := loads.Load(); n != 1 {
		t.Errorf("after another Get(1) in the outage key 1 was loaded %d times, want 1 (from L1)", n)
	}
}

// TestBatchWarmUpLockTakenAsRedisDiesLoadsOnce is
// TestWarmUpLockTakenAsRedisDiesLoadsOnce for a warm-up with a batch
// loader: its pipeline of acquires takes the locks of keys 1 and 2, and a
// Get loads key 1 before the pipeline's reply arrives. The warm-up's batch
// load must leave key 1 out and load key 2 alone.
func TestBatchWarmUpLockTakenAsRedisDiesLoadsOnce(t *testing.T) {
	srv := redistest.Start(t)
	var armed atomic.Bool
	var perKey [3]atomic.Int64 // loads of keys 1 and 2 once armed, by either loader
	count := func(k int) {
		if armed.Load() && k > 0 {
			perKey[k].Add(1)
		}
	}
	batch := func(ctx context.Context, keys []int) (map[int]string, error) {
		out := make(map[int]string, len(keys))
		for _, k := range keys {
			count(k)
			out[k] = faultValue(k)
		}
		return out, nil
	}
	one := func(ctx context.Context, k int) (string, error) {
		count(k)
		return faultValue(k), nil
	}
	hold := newScriptHold(valueKey("1"))
	c := holdWarmCache(t, srv, hold, one,
		cacheaside.WithBatchLoader(batch),
		cacheaside.WithWarmupKeys(1, 2))
	armed.Store(true)
	err := killDuringWarmAcquire(t, srv, c, hold, perKey[1].Load)
	t.Logf("Warm during the kill: %v", err)
	checkWarmDuringKill(t, err)
	for _, k := range []int{1, 2} {
		if n := perKey[k].Load(); n != 1 {
			t.Errorf("key %d was loaded %d times by a Get and the warm-up during the outage, want 1", k, n)
		}
	}
	for _, k := range []int{1, 2} {
		mustGet(t, c, k)
		if n := perKey[k].Load(); n != 1 {
			t.Errorf("after a Get(%d) in the outage key %d was loaded %d times, want 1 (from L1)", k, k, n)
		}
	}
}
