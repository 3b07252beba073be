package cacheaside_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// The tests of this file kill Redis (kill -9) while a load runs: the load
// itself kills it, and goes on once it is dead.

// outageCache returns a Cache over srv the way the tests of this file have
// one: a 200ms Redis timeout and an L1 for the outage, plus opts; before
// it returns, a Get of key 0 connects it and creates the prefix's clock
// (clockloss.go).
func outageCache(t *testing.T, srv *redistest.Server, load cacheaside.LoadFunc[int, string], opts ...cacheaside.Option) *cacheaside.Cache[int, string] {
	t.Helper()
	c := newFaultCache(t, newFaultClient(t, srv.Addr()), load, append([]cacheaside.Option{
		cacheaside.WithRedisTimeout(200 * time.Millisecond),
		cacheaside.WithL1(cacheaside.L1{OutageOnly: true}),
	}, opts...)...)
	mustGet(t, c, 0)
	return c
}

// TestLoadUnderLockWhenRedisDies: a flight takes the fill lock, Redis is
// killed (kill -9) during its load, and the fill cannot be checked (the
// clock MGET fails). That is an outage, not a Clear: the result goes to
// the caller and to L1, and the flight does not load the key again (it
// did: "queried one key 5 times" in examples/outage). A Get after it
// answers from L1 without a load.
func TestLoadUnderLockWhenRedisDies(t *testing.T) {
	srv := redistest.Start(t)
	var loads atomic.Int64
	load := func(ctx context.Context, k int) (string, error) {
		if loads.Add(1) == 2 { // the first load is outageCache's Get
			srv.Kill()
		}
		return faultValue(k), nil
	}
	c := outageCache(t, srv, load)
	ctx, cancel := context.WithTimeout(context.Background(), faultGetTimeout)
	defer cancel()
	if v, err := c.Get(ctx, 1); err != nil || v != faultValue(1) {
		t.Fatalf("Get(1) during the kill = %q, %v, want %q, nil", v, err, faultValue(1))
	}
	if n := loads.Load() - 1; n != 1 {
		t.Errorf("Get(1) loaded key 1 %d times, want 1", n)
	}
	if v, err := c.Get(ctx, 1); err != nil || v != faultValue(1) {
		t.Fatalf("Get(1) in the outage = %q, %v, want %q, nil", v, err, faultValue(1))
	}
	if n := loads.Load() - 1; n != 1 {
		t.Errorf("after a second Get(1) in the outage key 1 was loaded %d times, want 1 (from L1)", n)
	}
}

// TestBatchLoadUnderLockWhenRedisDies is TestLoadUnderLockWhenRedisDies
// for GetMany's batch loader: the clock read before the batch's fill fails
// because Redis was killed during the load. The batch's values go to the
// caller and to L1, not to no one: GetMany returns them, and neither it
// nor a later Get of the same keys in the outage loads them again.
func TestBatchLoadUnderLockWhenRedisDies(t *testing.T) {
	srv := redistest.Start(t)
	var calls, loaded atomic.Int64
	batch := func(ctx context.Context, keys []int) (map[int]string, error) {
		if calls.Add(1) == 1 {
			srv.Kill()
		}
		loaded.Add(int64(len(keys)))
		out := make(map[int]string, len(keys))
		for _, k := range keys {
			out[k] = faultValue(k)
		}
		return out, nil
	}
	one := func(ctx context.Context, k int) (string, error) {
		loaded.Add(1)
		return faultValue(k), nil
	}
	c := outageCache(t, srv, one, cacheaside.WithBatchLoader(batch))
	loaded.Store(0)
	ctx, cancel := context.WithTimeout(context.Background(), faultGetTimeout)
	defer cancel()
	keys := []int{1, 2, 3}
	got, err := c.GetMany(ctx, keys)
	if err != nil {
		t.Fatalf("GetMany during the kill: %v", err)
	}
	for _, k := range keys {
		if got[k] != faultValue(k) {
			t.Errorf("GetMany during the kill: key %d = %q, want %q", k, got[k], faultValue(k))
		}
	}
	if n := loaded.Load(); n != int64(len(keys)) {
		t.Errorf("GetMany loaded %d keys, want %d (each once)", n, len(keys))
	}
	for _, k := range keys {
		if v, err := c.Get(ctx, k); err != nil || v != faultValue(k) {
			t.Fatalf("Get(%d) in the outage = %q, %v, want %q, nil", k, v, err, faultValue(k))
		}
	}
	if n := loaded.Load(); n != int64(len(keys)) {
		t.Errorf("after Gets in the outage %d keys were loaded, want %d (from L1)", n, len(keys))
	}
}

// TestWarmUpLoadWhenRedisDiesIsTheKeysFlight: a warm-up takes a key's
// fill lock and loads it; Redis is killed (kill -9) during the load, and
// a Get of the key comes meanwhile. The warm-up's load is the key's
// flight in this process, so the Get waits for it and answers with its
// result instead of loading the key a second time: while Redis fails,
// the warm-up's result reaches L1 only after its fill and the lock's
// release have failed, and examples/outage's TestOutageWithRedisServer
// saw a Get load the key meanwhile ("queried one key 5 times during the
// outage, want at most 4": one instance loaded key 7 in its warm-up and
// again 2.56s later in a Get).
func TestWarmUpLoadWhenRedisDiesIsTheKeysFlight(t *testing.T) {
	srv := redistest.Start(t)
	var armed atomic.Bool
	var loads atomic.Int64
	inLoad, release := make(chan struct{}), make(chan struct{})
	load := func(ctx context.Context, k int) (string, error) {
		if k == 1 && armed.Load() {
			if loads.Add(1) == 1 { // the warm-up's load
				srv.Kill()
				close(inLoad)
				<-release
			}
		}
		return faultValue(k), nil
	}
	c := outageCache(t, srv, load,
		cacheaside.WithWarmupKeys(1),
		cacheaside.WithRestartCheck(0)) // no automatic warm-up to race with
	armed.Store(true)
	ctx, warmed := warmUntilLoad(t, c, inLoad)
	got := getAsync(ctx, c, 1)
	// Give the Get time to read the dead Redis and, before the fix, load
	// the key itself; then let the warm-up's load return.
	awaitLoads(loads.Load, 2)
	close(release)
	a := <-got
	if a.err != nil || a.val != faultValue(1) {
		t.Fatalf("Get(1) during the warm-up's load = %q, %v, want %q, nil", a.val, a.err, faultValue(1))
	}
	t.Logf("Warm during the kill: %v", <-warmed)
	if n := loads.Load(); n != 1 {
		t.Errorf("key 1 was loaded %d times by the warm-up and a Get during the outage, want 1", n)
	}
	if v, err := c.Get(ctx, 1); err != nil || v != faultValue(1) {
		t.Fatalf("Get(1) in the outage = %q, %v, want %q, nil", v, err, faultValue(1))
	}
	if n := loads.Load(); n != 1 {
		t.Errorf("after a second Get(1) in the outage key 1 was loaded %d times, want 1 (from L1)", n)
	}
}

// TestBatchWarmUpLoadWhenRedisDiesIsTheKeysFlight is
// TestWarmUpLoadWhenRedisDiesIsTheKeysFlight for a warm-up with a batch
// loader: Redis is killed (kill -9) during the warm-up's batch load of keys
// 1 and 2, and a Get of key 1 and a GetMany of keys 1 and 2 come meanwhile.
// The warm-up's batch load is the flight of each of its keys in this
// process, so they wait for it and answer with its results: each key is
// loaded once, here and by the Gets after it in the outage (from L1).
func TestBatchWarmUpLoadWhenRedisDiesIsTheKeysFlight(t *testing.T) {
	srv := redistest.Start(t)
	var armed atomic.Bool
	var calls atomic.Int64
	var perKey [3]atomic.Int64 // loads of keys 1 and 2 once armed, by either loader
	loads := func() int64 { return perKey[1].Load() + perKey[2].Load() }
	inLoad, release := make(chan struct{}), make(chan struct{})
	batch := func(ctx context.Context, keys []int) (map[int]string, error) {
		out := make(map[int]string, len(keys))
		for _, k := range keys {
			if armed.Load() {
				perKey[k].Add(1)
			}
			out[k] = faultValue(k)
		}
		if armed.Load() && calls.Add(1) == 1 { // the warm-up's load
			srv.Kill()
			close(inLoad)
			<-release
		}
		return out, nil
	}
	one := func(ctx context.Context, k int) (string, error) {
		if armed.Load() {
			perKey[k].Add(1)
		}
		return faultValue(k), nil
	}
	c := outageCache(t, srv, one,
		cacheaside.WithBatchLoader(batch),
		cacheaside.WithWarmupKeys(1, 2),
		cacheaside.WithRestartCheck(0)) // no automatic warm-up to race with
	armed.Store(true)
	ctx, warmed := warmUntilLoad(t, c, inLoad)
	got := getAsync(ctx, c, 1)
	type many struct {
		m   map[int]string
		err error
	}
	gotMany := make(chan many, 1)
	go func() {
		m, err := c.GetMany(ctx, []int{1, 2})
		gotMany <- many{m, err}
	}()
	// Give the Get and the GetMany time to read the dead Redis and, before
	// the fix, load the keys themselves; then let the warm-up's load return.
	awaitLoads(loads, 3)
	close(release)
	if a := <-got; a.err != nil || a.val != faultValue(1) {
		t.Errorf("Get(1) during the warm-up's batch load = %q, %v, want %q, nil", a.val, a.err, faultValue(1))
	}
	m := <-gotMany
	if m.err != nil {
		t.Errorf("GetMany(1, 2) during the warm-up's batch load: %v", m.err)
	}
	for _, k := range []int{1, 2} {
		if m.m[k] != faultValue(k) {
			t.Errorf("GetMany(1, 2) during the warm-up's batch load: key %d = %q, want %q", k, m.m[k], faultValue(k))
		}
	}
	t.Logf("Warm during the kill: %v", <-warmed)
	for _, k := range []int{1, 2} {
		if n := perKey[k].Load(); n != 1 {
			t.Errorf("key %d was loaded %d times by the warm-up, a Get and a GetMany during the outage, want 1", k, n)
		}
	}
	for _, k := range []int{1, 2} {
		if v, err := c.Get(ctx, k); err != nil || v != faultValue(k) {
			t.Fatalf("Get(%d) in the outage = %q, %v, want %q, nil", k, v, err, faultValue(k))
		}
		if n := perKey[k].Load(); n != 1 {
			t.Errorf("after a second Get(%d) in the outage key %d was loaded %d times, want 1 (from L1)", k, k, n)
		}
	}
}

// warmUntilLoad starts c.Warm(ctx), ctx ending after faultGetTimeout or
// with the test, and returns ctx and, once the warm-up's load has begun
// (inLoad closed), the channel of Warm's result.
func warmUntilLoad(t *testing.T, c *cacheaside.Cache[int, string], inLoad <-chan struct{}) (context.Context, <-chan error) {
	ctx, cancel := context.WithTimeout(context.Background(), faultGetTimeout)
	t.Cleanup(cancel)
	warmed := make(chan error, 1)
	go func() { warmed <- c.Warm(ctx) }()
	<-inLoad
	return ctx, warmed
}

// awaitLoads waits until loads() reaches n (a load the test wants not to
// happen) or two seconds pass.
func awaitLoads(loads func() int64, n int64) {
	for deadline := time.Now().Add(2 * time.Second); loads() < n && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
}
