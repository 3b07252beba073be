package cacheaside_test

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// row is a one-row database whose first read stalls after reading, until
// the test lets it go: it models a load that read the row just before an
// UPDATE and is slow to return it. Later reads return at once.
type row struct {
	val     atomic.Pointer[string]
	calls   atomic.Int64
	entered chan struct{} // closed when the first read has read the row
	release chan struct{} // closed by the test to let the first read return
}

func newRow(t *testing.T, v string) *row {
	r := &row{entered: make(chan struct{}), release: make(chan struct{})}
	r.val.Store(&v)
	t.Cleanup(r.letGo) // never leave a loader blocked, even when a test fails early
	return r
}

func (r *row) update(v string) { r.val.Store(&v) }

func (r *row) letGo() {
	select {
	case <-r.release:
	default:
		close(r.release)
	}
}

func (r *row) load(ctx context.Context, key string) (string, error) {
	v := *r.val.Load()
	if r.calls.Add(1) == 1 {
		close(r.entered)
		select {
		case <-r.release:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	return v, nil
}

// TestInvalidateDuringLoadDiscardsStaleFill proves that a load that read
// the row before an UPDATE + Invalidate (on another Cache) does not write
// what it read: its fill conflicts, the load is redone, and both Redis and
// the Get that started the load end up with the new value.
func TestInvalidateDuringLoadDiscardsStaleFill(t *testing.T) {
	srv := redistest.Start(t)
	a, b := invalidatedLoad(t, srv, func() {})
	if s := a.Stats(); s.FillConflicts < 1 {
		t.Errorf("Stats().FillConflicts = %d, want ≥ 1", s.FillConflicts)
	}
	if got, err := b.Get(testContext(t), "k"); err != nil || got != "new" {
		t.Errorf("Get(%q) after the load settled = %q, %v; want %q, nil", "k", got, err, "new")
	}
}

// invalidatedLoad runs the scenario: a's Get of k starts a load that reads
// "old" and blocks; the row becomes "new" and b invalidates k; between
// (for the eviction tests) runs; the load returns. It checks that a's Get
// answers "new" and that Redis does not hold "old", and returns a and b.
// opts are a's options.
func invalidatedLoad(t *testing.T, srv *redistest.Server, between func(), opts ...cacheaside.Option) (a, b *cacheaside.Cache[string, string]) {
	t.Helper()
	db := newRow(t, "old")
	a, b = newCache(t, srv, db.load, opts...), newCache(t, srv, db.load)
	ctx := testContext(t)

	first := getAsync(ctx, a, "k")
	await(t, db.entered, "the first load to read the row")
	db.update("new")
	if err := b.Invalidate(ctx, "k"); err != nil {
		t.Fatalf("Invalidate(%q) = %v, want nil", "k", err)
	}
	between()
	db.letGo()
	if r := await(t, first, "the Get whose load was invalidated"); r.err != nil || r.val != "new" {
		t.Errorf("Get(%q) = %q, %v; want %q, nil (a load that read the row before Invalidate must not answer)", "k", r.val, r.err, "new")
	}
	if v, ok := storedValue[string](t, srv, "ca:{k}"); ok && v != "new" {
		t.Errorf("Redis ca:{k} = %q after Invalidate, want %q or nothing (the fill of a load begun before Invalidate was accepted)", v, "new")
	}
	return a, b
}

// TestGetAfterInvalidateOnOtherCacheSeesNewValue proves that a Get that
// starts after Invalidate returned, on another Cache, returns the new row
// while the invalidated load is still in flight, and that the invalidated
// load, when it ends, does not overwrite it.
func TestGetAfterInvalidateOnOtherCacheSeesNewValue(t *testing.T) {
	srv := redistest.Start(t)
	db := newRow(t, "old")
	a, b := newCache(t, srv, db.load), newCache(t, srv, db.load)
	ctx := testContext(t)

	first := getAsync(ctx, a, "k")
	await(t, db.entered, "the first load to read the row")
	db.update("new")
	if err := b.Invalidate(ctx, "k"); err != nil {
		t.Fatalf("Invalidate(%q) = %v, want nil", "k", err)
	}
	if got, err := b.Get(ctx, "k"); err != nil || got != "new" {
		t.Errorf("Get(%q) started after Invalidate = %q, %v; want %q, nil", "k", got, err, "new")
	}
	db.letGo()
	if r := await(t, first, "the Get whose load was invalidated"); r.err != nil || r.val != "new" {
		t.Errorf("Get(%q) = %q, %v; want %q, nil", "k", r.val, r.err, "new")
	}
	if v, ok := storedValue[string](t, srv, "ca:{k}"); !ok || v != "new" {
		t.Errorf("Redis ca:{k} = %q (present %v), want %q", v, ok, "new")
	}
}

// TestSetDuringLoadSurvives proves that a value Set while a load is in
// flight is not overwritten by the slower load, and is what that load's Get
// returns.
func TestSetDuringLoadSurvives(t *testing.T) {
	srv := redistest.Start(t)
	db := newRow(t, "old")
	a, b := newCache(t, srv, db.load), newCache(t, srv, db.load)
	ctx := testContext(t)

	first := getAsync(ctx, a, "k")
	await(t, db.entered, "the first load to read the row")
	db.update("set")
	if err := b.Set(ctx, "k", "set"); err != nil {
		t.Fatalf("Set(%q) = %v, want nil", "k", err)
	}
	db.letGo()
	if r := await(t, first, "the Get whose load was overtaken by Set"); r.err != nil || r.val != "set" {
		t.Errorf("Get(%q) = %q, %v; want %q, nil", "k", r.val, r.err, "set")
	}
	if v, ok := storedValue[string](t, srv, "ca:{k}"); !ok || v != "set" {
		t.Errorf("Redis ca:{k} = %q (present %v), want the Set value %q", v, ok, "set")
	}
	if s := a.Stats(); s.FillConflicts < 1 {
		t.Errorf("Stats().FillConflicts = %d, want ≥ 1", s.FillConflicts)
	}
}

// TestInvalidateSameCacheIsStrict proves that on one Cache, a Get that
// starts after Invalidate returned never joins the load that was in flight
// before it and never returns the old value.
func TestInvalidateSameCacheIsStrict(t *testing.T) {
	srv := redistest.Start(t)
	db := newRow(t, "old")
	c := newCache(t, srv, db.load)
	ctx := testContext(t)

	first := getAsync(ctx, c, "k")
	await(t, db.entered, "the first load to read the row")
	db.update("new")
	if err := c.Invalidate(ctx, "k"); err != nil {
		t.Fatalf("Invalidate(%q) = %v, want nil", "k", err)
	}
	second := getAsync(ctx, c, "k")
	if r := await(t, second, "a Get started after Invalidate"); r.err != nil || r.val != "new" {
		t.Errorf("Get(%q) started after Invalidate = %q, %v; want %q, nil", "k", r.val, r.err, "new")
	}
	db.letGo()
	if r := await(t, first, "the Get whose load was invalidated"); r.err != nil || r.val != "new" {
		t.Errorf("Get(%q) = %q, %v; want %q, nil", "k", r.val, r.err, "new")
	}
	if v, ok := storedValue[string](t, srv, "ca:{k}"); !ok || v != "new" {
		t.Errorf("Redis ca:{k} = %q (present %v), want %q", v, ok, "new")
	}
}

// TestMaxRefillsZeroReturnsConflictingLoadUncached proves WithMaxRefills(0):
// a load whose fill conflicts is not redone; its value goes to the Get that
// started it, but nothing is written to Redis.
func TestMaxRefillsZeroReturnsConflictingLoadUncached(t *testing.T) {
	srv := redistest.Start(t)
	db := newRow(t, "loaded")
	a := newCache(t, srv, db.load, cacheaside.WithMaxRefills(0))
	b := newCache(t, srv, db.load)
	ctx := testContext(t)

	first := getAsync(ctx, a, "k")
	await(t, db.entered, "the first load to read the row")
	db.update("updated")
	if err := b.Invalidate(ctx, "k"); err != nil {
		t.Fatalf("Invalidate(%q) = %v, want nil", "k", err)
	}
	db.letGo()
	// The conflicting load read "loaded" before the Invalidate: it goes to
	// no one. One more load, returned uncached, reads "updated".
	if r := await(t, first, "the Get whose load conflicted"); r.err != nil || r.val != "updated" {
		t.Errorf("Get(%q) = %q, %v; want %q, nil (reloaded, returned uncached)", "k", r.val, r.err, "updated")
	}
	if n := db.calls.Load(); n != 2 {
		t.Errorf("loader called %d times with WithMaxRefills(0), want 2 (the discarded load and one uncached reload)", n)
	}
	if ex := srv.CLI(t, "EXISTS", "ca:{k}"); ex != "0" {
		t.Errorf("EXISTS ca:{k} = %s after a conflicting fill with WithMaxRefills(0), want 0", ex)
	}
	if s := a.Stats(); s.FillConflicts != 1 {
		t.Errorf("Stats().FillConflicts = %d, want 1", s.FillConflicts)
	}
}

// TestUnlockedLoadRespectsInvalidate proves that a waiter that gave up on
// the lock and loads without it writes nothing when the key is invalidated
// during its load: its fill conflicts and the load is redone.
func TestUnlockedLoadRespectsInvalidate(t *testing.T) {
	srv := redistest.Start(t)
	db := newRow(t, "old")
	a := newCache(t, srv, db.load, cacheaside.WithLockWait(50*time.Millisecond))
	b := newCache(t, srv, db.load)
	ctx := testContext(t)
	srv.CLI(t, "SET", "ca:{k}:lock", "token-of-a-slow-process", "PX", "60000")

	first := getAsync(ctx, a, "k")
	await(t, db.entered, "the unlocked load to read the row")
	db.update("new")
	if err := b.Invalidate(ctx, "k"); err != nil {
		t.Fatalf("Invalidate(%q) = %v, want nil", "k", err)
	}
	db.letGo()
	if r := await(t, first, "the Get whose unlocked load was invalidated"); r.err != nil || r.val != "new" {
		t.Errorf("Get(%q) = %q, %v; want %q, nil", "k", r.val, r.err, "new")
	}
	if v, ok := storedValue[string](t, srv, "ca:{k}"); ok && v != "new" {
		t.Errorf("Redis ca:{k} = %q, want %q or nothing", v, "new")
	}
	if s := a.Stats(); s.LockWaitTimeouts != 1 || s.FillConflicts < 1 {
		t.Errorf("Stats() = %+v, want LockWaitTimeouts 1, FillConflicts ≥ 1", s)
	}
}

// TestInvalidateManyKeys proves that Invalidate with several keys removes
// each of them from Redis and the next Gets reload them.
func TestInvalidateManyKeys(t *testing.T) {
	srv := redistest.Start(t)
	var version atomic.Int64
	c := newCache(t, srv, func(ctx context.Context, id int64) (int64, error) { return id*100 + version.Load(), nil })
	ctx := testContext(t)
	for id := range int64(4) {
		if got, err := c.Get(ctx, id); err != nil || got != id*100 {
			t.Fatalf("Get(%v) = %v, %v; want %v, nil", id, got, err, id*100)
		}
	}
	version.Store(1)
	if err := c.Invalidate(ctx, 0, 1, 2); err != nil {
		t.Fatalf("Invalidate(0, 1, 2) = %v, want nil", err)
	}
	want := []string{"ca:invalidations", "ca:{0}:gen", "ca:{1}:gen", "ca:{2}:gen", "ca:{3}", "ca:{3}:gen", "ca:{tags}:clock"}
	if keys := allKeys(t, srv); !slices.Equal(keys, want) {
		t.Errorf("Redis keys after Invalidate(0, 1, 2) = %q, want %q", keys, want)
	}
	for id, want := range []int64{1, 101, 201, 300} {
		if got, err := c.Get(ctx, int64(id)); err != nil || got != want {
			t.Errorf("Get(%v) after Invalidate(0, 1, 2) = %v, %v; want %v, nil", id, got, err, want)
		}
	}
}
