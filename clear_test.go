package cacheaside_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// versionDB is a database whose every row reads as its current version:
// "v1" until bump, then "v2", ... It counts loads.
type versionDB struct {
	mu    sync.Mutex
	ver   string
	loads atomic.Int64
}

func newVersionDB() *versionDB { return &versionDB{ver: "v1"} }

func (d *versionDB) set(v string) { d.mu.Lock(); d.ver = v; d.mu.Unlock() }

func (d *versionDB) load(ctx context.Context, key string) (string, error) {
	d.loads.Add(1)
	d.mu.Lock()
	defer d.mu.Unlock()
	return key + "=" + d.ver, nil
}

func (d *versionDB) loadMany(ctx context.Context, keys []string) (map[string]string, error) {
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		out[k], _ = d.load(ctx, k)
	}
	return out, nil
}

// TestClearAcrossInstancesAndPrefixes: after a's Clear, b (another process
// of the same prefix) reloads, while a cache of another prefix still hits.
func TestClearAcrossInstancesAndPrefixes(t *testing.T) {
	srv := redistest.Start(t)
	db, other := newVersionDB(), newVersionDB()
	a, b := newCache(t, srv, db.load), newCache(t, srv, db.load)
	o := newCache(t, srv, other.load, cacheaside.WithPrefix("other:"))
	ctx := testContext(t)
	mustGetValue(t, a, "k", "k=v1", "warm a")
	mustGetValue(t, b, "k", "k=v1", "warm b")
	mustGetValue(t, o, "k", "k=v1", "warm other prefix")
	if n := db.loads.Load(); n != 1 {
		t.Fatalf("loads after warming = %d, want 1", n)
	}
	db.set("v2")
	other.set("v2")
	if err := a.Clear(ctx); err != nil {
		t.Fatalf("Clear() = %v, want nil", err)
	}
	mustGetValue(t, b, "k", "k=v2", "b after a's Clear")
	mustGetValue(t, a, "k", "k=v2", "a after its Clear")
	mustGetValue(t, o, "k", "k=v1", "other prefix after Clear")
	if n := other.loads.Load(); n != 1 {
		t.Errorf("other prefix loads = %d, want 1 (Clear must not touch it)", n)
	}
	db.mustStayCached(t, b, "k", "k=v2")
}

// mustStayCached fails the test unless Gets of key on c return want
// without a load: it is cached (again).
func (d *versionDB) mustStayCached(t *testing.T, c *cacheaside.Cache[string, string], key, want string) {
	t.Helper()
	before := d.loads.Load()
	for range 3 {
		mustGetValue(t, c, key, want, "cached")
	}
	if n := d.loads.Load() - before; n != 0 {
		t.Errorf("loads of a cached key = %d, want 0", n)
	}
}

// TestClearGetMany: GetMany honours a Clear made by another process.
func TestClearGetMany(t *testing.T) {
	srv := redistest.Start(t)
	db := newVersionDB()
	a := newCache(t, srv, db.load)
	b := newCache(t, srv, db.load, cacheaside.WithBatchLoader(db.loadMany))
	ctx := testContext(t)
	keys := []string{"x", "y", "z"}
	if _, err := b.GetMany(ctx, keys); err != nil {
		t.Fatalf("GetMany: %v", err)
	}
	db.set("v2")
	if err := a.Clear(ctx); err != nil {
		t.Fatalf("Clear() = %v, want nil", err)
	}
	got, err := b.GetMany(ctx, keys)
	if err != nil {
		t.Fatalf("GetMany after Clear: %v", err)
	}
	for _, k := range keys {
		if got[k] != k+"=v2" {
			t.Errorf("GetMany after Clear [%q] = %q, want %q", k, got[k], k+"=v2")
		}
	}
}

// TestClearDuringLoadDoesNotWrite: a load that read the row before a
// Clear does not write what it read, whether the Clear came from its own
// process or from another one, and a Get afterwards returns the new value.
func TestClearDuringLoadDoesNotWrite(t *testing.T) {
	duringLoadDoesNotWrite(t, "Clear", nil, func(ctx context.Context, c *cacheaside.Cache[string, string]) error {
		return c.Clear(ctx)
	})
}

// duringLoadDoesNotWrite runs the scenario of an invalidation (invalidate,
// a Clear or an InvalidateTag) during a load that read the row before it,
// the invalidation sent by the loading process and by another one; the
// loader tags its result with tags. It checks that Redis does not hold
// what the load read and that Gets afterwards return the new value.
func duringLoadDoesNotWrite(t *testing.T, what string, tags []string, invalidate func(context.Context, *cacheaside.Cache[string, string]) error) {
	for _, remote := range []bool{false, true} {
		name := map[bool]string{false: "same process", true: "other process"}[remote]
		t.Run(name, func(t *testing.T) {
			srv := redistest.Start(t)
			db := newRow(t, "old")
			load := func(ctx context.Context, key string) (string, error) {
				cacheaside.Tag(ctx, tags...)
				return db.load(ctx, key)
			}
			a, b := newCache(t, srv, load), newCache(t, srv, load)
			ctx := testContext(t)
			// An invalidation before, so that a knows the prefix's clock
			// (a process that knows of none writes values a later
			// invalidation outdates, never to be read: see mayFill).
			if err := invalidate(ctx, b); err != nil {
				t.Fatalf("first %s() = %v", what, err)
			}
			first := getAsync(ctx, a, "k")
			<-db.entered
			db.update("new")
			by := a
			if remote {
				by = b
			}
			if err := invalidate(ctx, by); err != nil {
				t.Fatalf("%s() = %v, want nil", what, err)
			}
			db.letGo()
			if o := await(t, first, "the Get that started the load"); o.err != nil {
				t.Fatalf("first Get: %v", o.err)
			}
			if v, ok := storedValue[string](t, srv, valueKey("k")); ok && v == "old" {
				t.Errorf("Redis holds %q after a %s during its load, want no write", v, what)
			}
			mustGetValue(t, a, "k", "new", "a after "+what)
			mustGetValue(t, b, "k", "new", "b after "+what)
		})
	}
}

// TestClearL1: a's Clear empties its own read-first L1 at once and b's
// when the feed's message arrives.
func TestClearL1(t *testing.T) {
	srv := redistest.Start(t)
	db := newVersionDB()
	l1 := cacheaside.WithL1(cacheaside.L1{})
	a, b := newCache(t, srv, db.load, l1), newCache(t, srv, db.load, l1)
	ctx := testContext(t)
	mustGetValue(t, a, "k", "k=v1", "warm a")
	mustGetValue(t, b, "k", "k=v1", "warm b")
	db.set("v2")
	if err := a.Clear(ctx); err != nil {
		t.Fatalf("Clear() = %v, want nil", err)
	}
	mustGetValue(t, a, "k", "k=v2", "a's L1 after its Clear")
	waitFor(t, 10*time.Second, "b's L1 drops k after a's Clear", func() bool {
		v, err := b.Get(ctx, "k")
		return err == nil && v == "k=v2"
	})
}

// TestClearRedisUnavailable: a Clear that cannot reach Redis fails with
// ErrRedisUnavailable, and until a Clear succeeds its process serves no
// Redis copy of the prefix (it loads).
func TestClearRedisUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	db := newVersionDB()
	a := newCache(t, srv, db.load, unavailableOpts...)
	ctx := testContext(t)
	mustGetValue(t, a, "k", "k=v1", "warm")
	db.set("v2")
	thaw := freezeServer(t, srv)
	err := a.Clear(ctx)
	if !errors.Is(err, cacheaside.ErrRedisUnavailable) {
		t.Fatalf("Clear() with Redis frozen = %v, want ErrRedisUnavailable", err)
	}
	thaw()
	mustGetValue(t, a, "k", "k=v2", "after the failed Clear")
	if err := a.Clear(ctx); err != nil {
		t.Fatalf("Clear() after the thaw = %v, want nil", err)
	}
	mustGetValue(t, a, "k", "k=v2", "after the Clear got through")
	db.mustStayCached(t, a, "k", "k=v2")
}

// unavailableOpts make a Cache find a frozen Redis unavailable quickly.
var unavailableOpts = []cacheaside.Option{cacheaside.WithRedisTimeout(200 * time.Millisecond), cacheaside.WithCircuitBreaker(cacheaside.CircuitBreaker{Failures: -1})}

// TestClearCorruptClock: a clock key holding another program's bytes is
// never a panic: the prefix's values are misses (loaded) until a Clear
// rewrites the clock.
func TestClearCorruptClock(t *testing.T) {
	srv := redistest.Start(t)
	db := newVersionDB()
	a := newCache(t, srv, db.load)
	ctx := testContext(t)
	mustGetValue(t, a, "k", "k=v1", "warm")
	rdb := srv.Client(t)
	for _, bad := range []string{"garbage", "5:9", ":", "18446744073709551616:1"} {
		if err := rdb.Set(ctx, "ca:{tags}:clock", bad, 0).Err(); err != nil {
			t.Fatal(err)
		}
		db.set(bad)
		mustGetValue(t, a, "k", "k="+bad, "with clock "+bad)
	}
	// Another Redis type: MGET reads it as missing; Clear replaces it.
	if err := rdb.Del(ctx, "ca:{tags}:clock").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.HSet(ctx, "ca:{tags}:clock", "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	mustGetValue(t, a, "k", "k=18446744073709551616:1", "with a hash as the clock")
	if err := a.Clear(ctx); err != nil {
		t.Fatalf("Clear() over a corrupt clock = %v, want nil", err)
	}
	db.set("v3")
	mustGetValue(t, a, "k", "k=v3", "after Clear")
	db.mustStayCached(t, a, "k", "k=v3")
}

// TestClearOverHugeClock: a clock key holding a clock beyond what the
// clock script computes exactly (Lua numbers are doubles: 2^53 and up)
// must neither make a Clear ineffective nor stop Clear from healing it.
func TestClearOverHugeClock(t *testing.T) {
	for _, huge := range []string{"9007199254740993:0", "99999999999999999999:0"} {
		t.Run(huge, func(t *testing.T) {
			srv := redistest.Start(t)
			db := newVersionDB()
			rdb := srv.Client(t)
			ctx := testContext(t)
			if err := rdb.Set(ctx, "ca:{tags}:clock", huge, 0).Err(); err != nil {
				t.Fatal(err)
			}
			a := newCache(t, srv, db.load)
			mustGetValue(t, a, "k", "k=v1", "warm")
			db.set("v2")
			if err := a.Clear(ctx); err != nil {
				t.Fatalf("Clear() over clock %s = %v, want nil", huge, err)
			}
			b := newCache(t, srv, db.load)
			mustGetValue(t, b, "k", "k=v2", "new process after Clear")
			mustGetValue(t, a, "k", "k=v2", "a after its Clear")
		})
	}
}

// TestSetAfterClearIsServed: a Set made after another process's Clear
// returned, by a process that has not read the prefix since (a writer),
// stores a value that Gets serve, without a load.
func TestSetAfterClearIsServed(t *testing.T) {
	srv := redistest.Start(t)
	db := newVersionDB()
	a := newCache(t, srv, db.load)
	w := newCache(t, srv, db.load)
	ctx := testContext(t)
	mustGetValue(t, a, "k", "k=v1", "warm")
	mustGetValue(t, w, "k", "k=v1", "the writer reads once, before the Clear")
	if err := a.Clear(ctx); err != nil {
		t.Fatalf("Clear() = %v, want nil", err)
	}
	if err := w.Set(ctx, "k", "set"); err != nil {
		t.Fatalf("Set() = %v, want nil", err)
	}
	before := db.loads.Load()
	mustGetValue(t, a, "k", "set", "after the writer's Set")
	if n := db.loads.Load() - before; n != 0 {
		t.Errorf("loads after Set = %d, want 0 (the Set value is cached)", n)
	}
}

// TestClearSentinel: Clear behind Sentinel, across two processes.
func TestClearSentinel(t *testing.T) {
	sn := redistest.StartSentinel(t)
	db := newVersionDB()
	a := newCacheOn(t, sn.Client(t), db.load)
	b := newCacheOn(t, sn.Client(t), db.load)
	ctx := testContext(t)
	mustGetValue(t, b, "k", "k=v1", "warm b")
	db.set("v2")
	if err := a.Clear(ctx); err != nil {
		t.Fatalf("Clear() = %v, want nil", err)
	}
	mustGetValue(t, b, "k", "k=v2", "b after a's Clear")
}

// TestClearUnsupportedOnRing: a redis.Ring shards keys by their own hash,
// so no clock can be read beside every value: Clear and InvalidateTag say
// so instead of clearing some shards' reads and not others, and Gets go on
// as plain reads (no clock key sent to a shard that does not hold it).
func TestClearUnsupportedOnRing(t *testing.T) {
	srv := redistest.Start(t)
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": srv.Addr()}, MaxRetries: -1})
	t.Cleanup(func() { _ = ring.Close() })
	db := newVersionDB()
	c, err := cacheaside.New[string, string](ring, db.load)
	if err != nil {
		t.Fatalf("New(ring) = %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	ctx := testContext(t)
	mustGetValue(t, c, "k", "k=v1", "warm")
	if err := c.Clear(ctx); !errors.Is(err, cacheaside.ErrClearUnsupported) {
		t.Errorf("Clear() on a Ring = %v, want ErrClearUnsupported", err)
	}
	if err := c.InvalidateTag(ctx, "t"); !errors.Is(err, cacheaside.ErrClearUnsupported) {
		t.Errorf("InvalidateTag() on a Ring = %v, want ErrClearUnsupported", err)
	}
	db.mustStayCached(t, c, "k", "k=v1")
	if n := srv.CLI(t, "EXISTS", "ca:{tags}:clock"); n != "0" {
		t.Errorf("EXISTS clock key = %s, want 0: nothing written on a Ring", n)
	}
}
