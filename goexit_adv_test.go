package cacheaside_test

// Adversarial tests of the Goexit containment of 7b664e3: paths where a
// codec's or a go-redis hook's runtime.Goexit (t.FailNow on a cache
// goroutine) still wedges a key, hands out a zero value with a nil error,
// or hangs Close. Real redis-server processes only (internal/redistest).

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// advExitCodec is JSON whose Marshal and Unmarshal call runtime.Goexit
// while armed.
type advExitCodec struct {
	cacheaside.JSON
	marshal, unmarshal *atomic.Bool
	exits              *atomic.Int64
}

func (c advExitCodec) Marshal(v any) ([]byte, error) {
	if c.marshal.Load() {
		c.exits.Add(1)
		runtime.Goexit()
	}
	return c.JSON.Marshal(v)
}

func (c advExitCodec) Unmarshal(data []byte, v any) error {
	if c.unmarshal.Load() {
		c.exits.Add(1)
		runtime.Goexit()
	}
	return c.JSON.Unmarshal(data, v)
}

func newAdvExitCodec() advExitCodec {
	return advExitCodec{marshal: new(atomic.Bool), unmarshal: new(atomic.Bool), exits: new(atomic.Int64)}
}

// inOwnGoroutine runs f on a goroutine of its own (a codec's Goexit may
// end it) and reports whether f returned.
func inOwnGoroutine(f func()) (returned bool) {
	done := make(chan bool, 1)
	go func() {
		ok := false
		defer func() { done <- ok }()
		f()
		ok = true
	}()
	return <-done
}

// closeWithin closes c on a goroutine and reports whether Close returned
// within d (a hung Close is left behind: the test fails anyway).
func closeWithin[K comparable, V any](c *cacheaside.Cache[K, V], d time.Duration) bool {
	done := make(chan struct{})
	go func() { _ = c.Close(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(d):
		return false
	}
}

// TestAdvGoexit2GetManyMarshalOnFillZeroValue: GetMany without a batch
// loader resolves its missing keys on resolveSingly's errgroup
// goroutines; a Marshal that calls runtime.Goexit in one key's fill ends
// that goroutine silently, results[i] stays the zero result, resolveBatch
// returns, and finishFlights publishes it: GetMany answers the zero value
// with a nil error (the key present in the map, "").
func TestAdvGoexit2GetManyMarshalOnFillZeroValue(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	codec := newAdvExitCodec()
	c := newCache(t, srv, func(_ context.Context, k int) (string, error) { return faultValue(k), nil },
		cacheaside.WithCodec(codec))
	codec.marshal.Store(true)
	var out map[int]string
	var err error
	if !inOwnGoroutine(func() { out, err = c.GetMany(ctx, []int{1}) }) {
		t.Fatalf("GetMany's own goroutine ended")
	}
	codec.marshal.Store(false)
	if v, ok := out[1]; ok && err == nil && v != faultValue(1) {
		t.Errorf("GetMany([1]) with a Marshal that called runtime.Goexit = %q, nil error: neither the loaded value nor an error (exits %d)", v, codec.exits.Load())
	} else {
		t.Logf("GetMany = %v, %v", out, err)
	}
	mustGetValue(t, c, 1, faultValue(1), "Get(1) after, codec healthy")
}

// TestAdvGoexitHeldGetManyBatchMarshalOnFill (passes on main): the same through
// WithBatchLoader, whose stale keys (revived on resolveSingly) go the
// same way; here the simplest: the batch loader path's Marshal runs on
// the batch goroutine (finishFlights covers it), so this checks the
// containment that does hold there.
func TestAdvGoexitHeldGetManyBatchMarshalOnFill(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	codec := newAdvExitCodec()
	c := newCache(t, srv, func(_ context.Context, k int) (string, error) { return faultValue(k), nil },
		cacheaside.WithCodec(codec),
		cacheaside.WithBatchLoader(func(_ context.Context, ks []int) (map[int]string, error) {
			m := map[int]string{}
			for _, k := range ks {
				m[k] = faultValue(k)
			}
			return m, nil
		}))
	codec.marshal.Store(true)
	var out map[int]string
	var err error
	if !inOwnGoroutine(func() { out, err = c.GetMany(ctx, []int{1, 2}) }) {
		t.Fatalf("GetMany's own goroutine ended")
	}
	codec.marshal.Store(false)
	for _, k := range []int{1, 2} {
		if v, ok := out[k]; ok && err == nil && v != faultValue(k) {
			t.Errorf("GetMany key %d = %q, nil error: zero value", k, v)
		}
	}
	t.Logf("GetMany = %v, %v", out, err)
	mustGetValue(t, c, 1, faultValue(1), "Get(1) after, codec healthy")
	mustGetValue(t, c, 2, faultValue(2), "Get(2) after, codec healthy")
}

// TestAdvGoexit2GetManyDecodeAfterMissWedgesKey: GetMany decodes its
// MGET's replies on the caller's goroutine and joins the flight of each
// key that missed as it goes. Key 1 misses (its flight is joined, led by
// this call, not started), key 2 is in Redis and its Unmarshal calls
// runtime.Goexit: the caller's goroutine ends with key 1's flight in the
// air, and every later Get of key 1 waits for its context.
func TestAdvGoexit2GetManyDecodeAfterMissWedgesKey(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	codec := newAdvExitCodec()
	c := newCache(t, srv, func(_ context.Context, k int) (string, error) { return faultValue(k), nil },
		cacheaside.WithCodec(codec))
	if err := c.Set(ctx, 2, faultValue(2)); err != nil {
		t.Fatal(err)
	}
	codec.unmarshal.Store(true)
	if inOwnGoroutine(func() { _, _ = c.GetMany(ctx, []int{1, 2}) }) {
		t.Logf("GetMany returned (its decode did not exit)")
	}
	codec.unmarshal.Store(false)
	gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	start := time.Now()
	v, err := c.Get(gctx, 1)
	if err != nil || v != faultValue(1) {
		t.Errorf("Get(1) after a GetMany whose decode of key 2 called runtime.Goexit (codec healthy again) = %q, %v after %v, want %q", v, err, time.Since(start).Round(time.Millisecond), faultValue(1))
	}
}

// TestAdvGoexit2ServeStaleMarshalOnReviveHangs: a stale value's reload
// runs on a goroutine of revive's (stale.go), which sends its outcome on
// done only when reload returns. A Marshal that calls runtime.Goexit in
// that reload's fill ends the goroutine without a send; without a soft
// timeout revive waits on done for ever: the flight never finishes (the
// Get waits for its context, every later Get of the key too), and Close,
// which waits for the flight goroutine, hangs.
func TestAdvGoexit2ServeStaleMarshalOnReviveHangs(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	codec := newAdvExitCodec()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	c, err := cacheaside.New(rdb, func(_ context.Context, k int) (string, error) { return faultValue(k), nil },
		cacheaside.WithRedisTimeout(redisTimeout), cacheaside.WithCodec(codec),
		cacheaside.WithTTL(100*time.Millisecond), cacheaside.WithServeStale(cacheaside.ServeStale{MaxStale: time.Minute}))
	if err != nil {
		t.Fatal(err)
	}
	mustGetValue(t, c, 1, faultValue(1), "first Get")
	time.Sleep(300 * time.Millisecond) // past the logical expiry: stale
	codec.marshal.Store(true)
	gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	start := time.Now()
	v, err := c.Get(gctx, 1)
	cancel()
	codec.marshal.Store(false)
	if err != nil {
		t.Errorf("Get(1) of a stale value whose reload's Marshal called runtime.Goexit = %q, %v after %v: want the stale value or an error, promptly (exits %d)",
			v, err, time.Since(start).Round(time.Millisecond), codec.exits.Load())
	}
	gctx, cancel = context.WithTimeout(ctx, 3*time.Second)
	v, err = c.Get(gctx, 1)
	cancel()
	if err != nil || v != faultValue(1) {
		t.Errorf("a later Get(1), codec healthy = %q, %v, want %q", v, err, faultValue(1))
	}
	if !closeWithin(c, 5*time.Second) {
		t.Errorf("Close did not return within 5s")
	}
}

// advExitHook is a go-redis hook that calls runtime.Goexit, once per
// arming, in the first command (or pipeline) that match accepts.
type advExitHook struct {
	armed *atomic.Bool
	match func(cmds []redis.Cmder) bool
	exits *atomic.Int64
}

func (h advExitHook) exit(cmds []redis.Cmder) {
	if h.armed.Load() && h.match(cmds) && h.armed.CompareAndSwap(true, false) {
		h.exits.Add(1)
		runtime.Goexit()
	}
}

func (h advExitHook) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h advExitHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.exit([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}
func (h advExitHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.exit(cmds)
		return next(ctx, cmds)
	}
}

func cmdNamed(names ...string) func([]redis.Cmder) bool {
	return func(cmds []redis.Cmder) bool {
		for _, c := range cmds {
			for _, n := range names {
				if c.Name() == n {
					return true
				}
			}
		}
		return false
	}
}

// TestAdvGoexit2HookInHeartbeatWedgesLoads: the heartbeat (heartbeat.go
// beat) extends the fill locks of running loads holding hb.busy; a hook
// that calls runtime.Goexit in that Extend (an inline call, on the beat's
// own goroutine) ends the goroutine with hb.busy locked and hb.running
// true. The load's stop() (fill.go loadAndFillOnce) then blocks on
// hb.busy for ever: the Get never returns, no later lock is extended, and
// Close hangs.
func TestAdvGoexit2HookInHeartbeatWedgesLoads(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	hook := advExitHook{armed: new(atomic.Bool), match: cmdNamed("evalsha", "eval"), exits: new(atomic.Int64)}
	rdb.AddHook(hook)
	c, err := cacheaside.New(rdb, func(_ context.Context, k int) (string, error) {
		if k == 1 {
			hook.armed.Store(true) // the only script while it sleeps: the heartbeat's Extend
			time.Sleep(300 * time.Millisecond)
			hook.armed.Store(false)
		}
		return faultValue(k), nil
	}, cacheaside.WithRedisTimeout(redisTimeout), cacheaside.WithFillLock(cacheaside.FillLock{TTL: 60 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	gctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	start := time.Now()
	v, err := c.Get(gctx, 1)
	cancel()
	if hook.exits.Load() == 0 {
		t.Fatal("the hook never ran in the heartbeat's Extend: the test proves nothing")
	}
	if err != nil && v == "" && time.Since(start) > 2*time.Second {
		t.Errorf("Get(1) whose lock's heartbeat hook called runtime.Goexit = %q, %v after %v: the load's stop() waits for hb.busy for ever",
			v, err, time.Since(start).Round(time.Millisecond))
	}
	gctx, cancel = context.WithTimeout(ctx, 3*time.Second)
	v, err = c.Get(gctx, 2)
	cancel()
	if err != nil || v != faultValue(2) {
		t.Errorf("a later Get(2), hook disarmed = %q, %v, want %q", v, err, faultValue(2))
	}
	if !closeWithin(c, 5*time.Second) {
		t.Errorf("Close did not return within 5s")
	}
}

// TestAdvGoexit2HookOnWatchedCallLeaksSlot: on the watched path (a client
// that does not honour context deadlines, no timeout clone), a Redis call
// runs on a worker goroutine holding one of the MaxAbandoned slots; a
// hook's runtime.Goexit there ends the worker before it gives the slot
// back (watched.go: <-g.slots after callSafely) or sends done. The slot is
// lost for good: with WithMaxAbandoned(1), every later Redis call of the
// process is skipped, and every Get loads (Redis never used again).
func TestAdvGoexit2HookOnWatchedCallLeaksSlot(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	hook := advExitHook{armed: new(atomic.Bool), match: cmdNamed("get", "mget"), exits: new(atomic.Int64)}
	rdb.AddHook(hook)
	var loads atomic.Int64
	c := newCacheOn(t, rdb, func(_ context.Context, k int) (string, error) {
		loads.Add(1)
		return faultValue(k), nil
	}, cacheaside.WithRedisTimeout(300*time.Millisecond), cacheaside.WithTimeoutClone(false), cacheaside.WithMaxAbandoned(1))
	mustGetValue(t, c, 1, faultValue(1), "first Get(1)")
	hook.armed.Store(true)
	if !inOwnGoroutine(func() { _, _ = c.Get(ctx, 1) }) {
		t.Logf("the Get's own goroutine ended (inline call)")
	}
	if hook.exits.Load() == 0 {
		t.Fatalf("the hook never exited")
	}
	hook.armed.Store(false)
	time.Sleep(100 * time.Millisecond)
	before := loads.Load()
	for range 3 {
		mustGetValue(t, c, 2, faultValue(2), "Get(2), hook disarmed")
	}
	if n := loads.Load() - before; n > 1 {
		t.Errorf("3 Gets of key 2 after one hook Goexit on a watched call loaded it %d times, want 1: Redis is no longer used (stats %+v)", n, c.Stats())
	}
}
