package cacheaside_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// staleDB is a loader whose answers, failures and speed the test controls.
type staleDB struct {
	version atomic.Int64
	fail    atomic.Bool
	slow    atomic.Int64 // nanoseconds each load sleeps
	calls   atomic.Int64
}

func (db *staleDB) load(ctx context.Context, k string) (int64, error) {
	db.calls.Add(1)
	time.Sleep(time.Duration(db.slow.Load()))
	if db.fail.Load() {
		return 0, errors.New("database down")
	}
	return db.version.Load(), nil
}

// staleTTL is the logical TTL of the stale tests' values; afterExpiry is
// long enough past it for a value written at once to be stale.
const (
	staleTTL    = 200 * time.Millisecond
	afterExpiry = staleTTL + 50*time.Millisecond
)

// newStaleCache returns a Cache whose values expire logically after
// staleTTL (no jitter) and stay servable for a minute more.
func newStaleCache[V any](t *testing.T, srv *redistest.Server, load cacheaside.LoadFunc[string, V], opts ...cacheaside.Option) *cacheaside.Cache[string, V] {
	t.Helper()
	opts = append([]cacheaside.Option{cacheaside.WithTTL(staleTTL), cacheaside.WithJitter(0), cacheaside.WithStaleIfError(time.Minute)}, opts...)
	return newCache(t, srv, load, opts...)
}

// TestStaleServedWhileLoaderFails lets a value expire logically while the
// database fails: Gets get the old value with a nil error, the failing
// loader is retried about once per second for the key (not once per Get),
// and once the database is back the fresh value replaces it.
func TestStaleServedWhileLoaderFails(t *testing.T) {
	srv := redistest.Start(t)
	db := &staleDB{}
	db.version.Store(1)
	c := newStaleCache(t, srv, db.load)
	ctx := context.Background()
	if v, err := c.Get(ctx, "k"); err != nil || v != 1 {
		t.Fatalf("Get(k) = %v, %v; want 1", v, err)
	}
	db.fail.Store(true)
	db.version.Store(2)
	time.Sleep(afterExpiry) // past the logical expiry
	before := db.calls.Load()
	for range 50 {
		if v, err := c.Get(ctx, "k"); err != nil || v != 1 {
			t.Fatalf("Get(k) with the database down = %v, %v; want the stale 1, nil", v, err)
		}
	}
	if n := db.calls.Load() - before; n < 1 || n > 3 {
		t.Errorf("loader calls during 50 stale Gets = %d, want 1 to 3 (retries are throttled per key)", n)
	}
	if s := c.Stats(); s.StaleServed < 50 {
		t.Errorf("Stats().StaleServed = %d, want ≥ 50", s.StaleServed)
	}
	db.fail.Store(false)
	deadline := time.Now().Add(waitLimit)
	for {
		v, err := c.Get(ctx, "k")
		if err == nil && v == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Get(k) after the database recovered = %v, %v; want 2 within %v", v, err, waitLimit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSoftTimeoutServesStale makes the reload of an expired value slow: a
// Get returns the stale value at the soft timeout, and the reload fills
// Redis in the background.
func TestSoftTimeoutServesStale(t *testing.T) {
	srv := redistest.Start(t)
	db := &staleDB{}
	db.version.Store(1)
	c := newStaleCache(t, srv, db.load, cacheaside.WithSoftTimeout(50*time.Millisecond))
	ctx := context.Background()
	if _, err := c.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	db.version.Store(2)
	db.slow.Store(int64(time.Second))
	time.Sleep(afterExpiry)
	start := time.Now()
	v, err := c.Get(ctx, "k")
	if took := time.Since(start); err != nil || v != 1 || took > 700*time.Millisecond {
		t.Fatalf("Get(k) during a slow reload = %v, %v after %v; want the stale 1 at the soft timeout (well under the 1s load)", v, err, took)
	}
	deadline := time.Now().Add(waitLimit)
	for {
		if v, _ := storedValue[int64](t, srv, "ca:{k}"); v == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the background reload did not fill Redis within %v", waitLimit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestStaleNeedsOption checks WithSoftTimeout is rejected without
// WithStaleIfError.
func TestStaleNeedsOption(t *testing.T) {
	srv := redistest.Start(t)
	_, err := cacheaside.New(srv.Client(t), (&staleDB{}).load, cacheaside.WithSoftTimeout(time.Second))
	if err == nil {
		t.Fatal("New(WithSoftTimeout without WithStaleIfError) = nil error, want one naming WithSoftTimeout")
	}
}

// TestFailingReloadThrottledAcrossFleet: three processes serve a stale key
// while the database fails. A failed reload holds the key's fill lock for
// about a second, so the whole fleet retries about once per second, not
// once per process or per Get.
func TestFailingReloadThrottledAcrossFleet(t *testing.T) {
	srv := redistest.Start(t)
	db := &staleDB{}
	db.version.Store(1)
	var fleet []*cacheaside.Cache[string, int64]
	for range 3 {
		fleet = append(fleet, newStaleCache(t, srv, db.load))
	}
	ctx := context.Background()
	if v, err := fleet[0].Get(ctx, "k"); err != nil || v != 1 {
		t.Fatalf("Get(k) = %v, %v; want 1", v, err)
	}
	db.fail.Store(true)
	time.Sleep(afterExpiry) // past the logical expiry
	before := db.calls.Load()
	const window = 2 * time.Second
	var wg sync.WaitGroup
	for _, c := range fleet {
		wg.Go(func() {
			for end := time.Now().Add(window); time.Now().Before(end); {
				if v, err := c.Get(ctx, "k"); err != nil || v != 1 {
					t.Errorf("Get(k) with the database down = %v, %v; want the stale 1, nil", v, err)
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	// About one retry per second across the fleet: 2-3 in 2 s, with room
	// for a slow machine; without the fleet-wide hold it would be at
	// least one per process per second (6+), without any throttle hundreds.
	n := db.calls.Load() - before
	if n < 1 || n > 4 {
		t.Errorf("loader calls from 3 processes in %v of stale Gets = %d, want 1 to 4 (about one per second across the fleet)", window, n)
	}
	t.Logf("loader calls from 3 processes in %v of stale Gets: %d", window, n)
}

// gatedDB is a one-row database whose reload can be held: while gate is
// set, a load reads the row and then blocks until the test closes gate.
type gatedDB struct {
	val     atomic.Pointer[string] // nil: the row was deleted
	calls   atomic.Int64
	gate    atomic.Pointer[chan struct{}]
	entered chan struct{} // receives once per load that blocks on gate
}

func newGatedDB(v string) *gatedDB {
	db := &gatedDB{entered: make(chan struct{}, 16)}
	db.set(v)
	return db
}

func (db *gatedDB) set(v string) { db.val.Store(&v) }
func (db *gatedDB) delete()      { db.val.Store(nil) }

// hold makes the next loads block after reading the row; the returned
// function lets them go (and is safe to call twice).
func (db *gatedDB) hold(t *testing.T) (letGo func()) {
	ch := make(chan struct{})
	db.gate.Store(&ch)
	var once sync.Once
	letGo = func() { once.Do(func() { db.gate.Store(nil); close(ch) }) }
	t.Cleanup(letGo)
	return letGo
}

func (db *gatedDB) load(ctx context.Context, key string) (string, error) {
	db.calls.Add(1)
	v := db.val.Load()
	if g := db.gate.Load(); g != nil {
		db.entered <- struct{}{}
		select {
		case <-*g:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if v == nil {
		return "", fmt.Errorf("row %q: %w", key, cacheaside.ErrNotFound)
	}
	return *v, nil
}

// TestStaleReloadConflictNotServed: the reload of an expired value reads
// the row, then the row changes and another process invalidates the key
// before the reload fills. The fill conflicts, and the value the reload
// read must go to no one: the Get answers the new row, as the miss path
// does.
func TestStaleReloadConflictNotServed(t *testing.T) {
	srv := redistest.Start(t)
	db := newGatedDB("old")
	a, b := newStaleCache(t, srv, db.load), newStaleCache(t, srv, db.load)
	ctx := testContext(t)
	if v, err := a.Get(ctx, "k"); err != nil || v != "old" {
		t.Fatalf("Get(k) = %q, %v; want %q, nil", v, err, "old")
	}
	time.Sleep(afterExpiry) // past the logical expiry
	letGo := db.hold(t)
	res := getAsync(ctx, a, "k")
	await(t, db.entered, "the reload to read the row")
	db.set("new")
	if err := b.Invalidate(ctx, "k"); err != nil {
		t.Fatalf("Invalidate(k) = %v, want nil", err)
	}
	letGo()
	if r := await(t, res, "the Get that reloaded"); r.err != nil || r.val != "new" {
		t.Errorf("Get(k) whose reload conflicted with Invalidate = %q, %v; want %q, nil (the reload read the row before Invalidate)", r.val, r.err, "new")
	}
	if v, ok := storedValue[string](t, srv, "ca:{k}"); ok && v != "new" {
		t.Errorf("Redis ca:{k} = %q after Invalidate, want %q or nothing", v, "new")
	}
	if s := a.Stats(); s.FillConflicts < 1 {
		t.Errorf("Stats().FillConflicts = %d, want ≥ 1", s.FillConflicts)
	}
}

// TestStaleDeletedRowCachedAsNotFound: the row of an expired value was
// deleted. The reload's not-found answer replaces the stale value in Redis
// with a not-found marker, so later Gets and GetMany answer from it
// without calling the loader and never return the deleted row.
func TestStaleDeletedRowCachedAsNotFound(t *testing.T) {
	srv := redistest.Start(t)
	db := newGatedDB("row")
	c := newStaleCache(t, srv, db.load)
	ctx := testContext(t)
	if v, err := c.Get(ctx, "k"); err != nil || v != "row" {
		t.Fatalf("Get(k) = %q, %v; want %q, nil", v, err, "row")
	}
	db.delete()
	time.Sleep(afterExpiry) // past the logical expiry
	if v, err := c.Get(ctx, "k"); !errors.Is(err, cacheaside.ErrNotFound) {
		t.Fatalf("Get(k) after the row was deleted = %q, %v; want ErrNotFound", v, err)
	}
	if !isNotFoundMarker(t, srv, "ca:{k}") {
		v, ok := storedValue[string](t, srv, "ca:{k}")
		t.Errorf("Redis ca:{k} = %q (present %v) after the reload found no row, want a not-found marker", v, ok)
	}
	calls := db.calls.Load()
	for range 3 {
		if v, err := c.Get(ctx, "k"); !errors.Is(err, cacheaside.ErrNotFound) {
			t.Errorf("Get(k) = %q, %v; want ErrNotFound", v, err)
		}
	}
	if m, err := c.GetMany(ctx, []string{"k"}); err != nil || len(m) != 0 {
		t.Errorf("GetMany([k]) = %v, %v; want an empty map, nil (the row was deleted)", m, err)
	}
	if n := db.calls.Load() - calls; n != 0 {
		t.Errorf("loader calls for 3 Gets and a GetMany of a deleted row = %d, want 0 (answered by the not-found marker)", n)
	}
}

// TestGetManyStaleReloadsLikeGet: GetMany of expired values with a healthy
// loader reloads them under their locks and answers the fresh values, as
// Get does, for every key (not the first few); with a failing loader it
// answers the stale values with a nil error.
func TestGetManyStaleReloadsLikeGet(t *testing.T) {
	srv := redistest.Start(t)
	db := &staleDB{}
	db.version.Store(1)
	c := newStaleCache(t, srv, db.load)
	ctx := testContext(t)
	keys := make([]string, 10)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
	}
	check := func(when string, want int64) {
		t.Helper()
		m, err := c.GetMany(ctx, keys)
		if err != nil || len(m) != len(keys) {
			t.Fatalf("GetMany %s = %v, %v; want %d keys, nil", when, m, err, len(keys))
		}
		for _, k := range keys {
			if m[k] != want {
				t.Errorf("GetMany %s: %s = %d, want %d", when, k, m[k], want)
			}
		}
	}
	check("of cold keys", 1)

	db.version.Store(2)
	time.Sleep(afterExpiry) // past the logical expiry
	before, stale := db.calls.Load(), c.Stats().StaleServed
	check("of expired keys, healthy loader", 2)
	if n := db.calls.Load() - before; n != int64(len(keys)) {
		t.Errorf("loader calls for GetMany of %d expired keys = %d, want %d (one reload each)", len(keys), n, len(keys))
	}
	if n := c.Stats().StaleServed - stale; n != 0 {
		t.Errorf("Stats().StaleServed grew by %d with a healthy loader, want 0", n)
	}
	for _, k := range keys {
		if v, ok := storedValue[int64](t, srv, valueKey(k)); !ok || v != 2 {
			t.Errorf("Redis %s = %d (present %v) after GetMany, want 2", valueKey(k), v, ok)
		}
	}

	db.fail.Store(true)
	db.version.Store(3)
	time.Sleep(afterExpiry)
	stale = c.Stats().StaleServed
	check("of expired keys, loader failing", 2)
	if n := c.Stats().StaleServed - stale; n != uint64(len(keys)) {
		t.Errorf("Stats().StaleServed grew by %d for GetMany of %d expired keys with the loader failing, want %d", n, len(keys), len(keys))
	}
}
