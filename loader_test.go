package cacheaside_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// notFoundLoader returns a loader that says every key is missing, counting
// its calls.
func notFoundLoader(calls *atomic.Int64) cacheaside.LoadFunc[string, string] {
	return func(ctx context.Context, key string) (string, error) {
		calls.Add(1)
		return "", fmt.Errorf("product %q: %w", key, cacheaside.ErrNotFound)
	}
}

// TestGetNotFoundIsCachedForNegativeTTL proves negative caching: a "not
// found" answer is stored as a marker with the jittered negative TTL, Gets
// within it get ErrNotFound without calling the loader, and after it the
// loader is asked again. The first part uses a negative TTL of a minute,
// so that no pause of a loaded machine can let the marker expire between
// the Gets; the second uses 200ms and waits for the marker to go.
func TestGetNotFoundIsCachedForNegativeTTL(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	t.Run("within the negative TTL", func(t *testing.T) {
		var calls atomic.Int64
		c := newCache(t, srv, notFoundLoader(&calls), cacheaside.WithNegativeTTL(time.Minute), cacheaside.WithJitter(0.1))
		for i := range 3 {
			if got, err := c.Get(ctx, "gone"); !errors.Is(err, cacheaside.ErrNotFound) {
				t.Fatalf("Get(%q) #%d = %q, %v; want an error matching ErrNotFound", "gone", i+1, got, err)
			}
		}
		if n := calls.Load(); n != 1 {
			t.Errorf("3 Gets of a missing key within the negative TTL called the loader %d times, want 1", n)
		}
		if !isNotFoundMarker(t, srv, "ca:{gone}") {
			t.Errorf("Redis ca:{gone} holds no not-found marker after a not-found load")
		}
		if ms := pttl(t, srv, "ca:{gone}"); ms < 50_000 || ms > 66_000 {
			t.Errorf("PTTL ca:{gone} = %dms, want within [54s, 66s] (1m ± 10%% jitter, less the test's own time)", ms)
		}
		if s := c.Stats(); s.Hits != 2 || s.Misses != 1 || s.LoadErrors != 0 {
			t.Errorf("Stats() = %+v, want Hits 2 (the marker), Misses 1, LoadErrors 0", s)
		}
	})
	t.Run("after the negative TTL", func(t *testing.T) {
		var calls atomic.Int64
		c := newCache(t, srv, notFoundLoader(&calls), cacheaside.WithNegativeTTL(200*time.Millisecond), cacheaside.WithJitter(0.1))
		if _, err := c.Get(ctx, "brief"); !errors.Is(err, cacheaside.ErrNotFound) {
			t.Fatalf("Get(%q) = %v; want ErrNotFound", "brief", err)
		}
		// It may be gone already on a slow machine; if not, its TTL is the
		// negative one, jittered: never the value TTL.
		if ms := pttl(t, srv, "ca:{brief}"); ms > 220 || ms == -1 {
			t.Errorf("PTTL ca:{brief} = %dms, want ≤ 220ms (200ms + 10%% jitter)", ms)
		}
		deadline := time.Now().Add(waitLimit)
		for srv.CLI(t, "EXISTS", "ca:{brief}") != "0" {
			if time.Now().After(deadline) {
				t.Fatalf("not-found marker still in Redis %v after it was written, PTTL %d", waitLimit, pttl(t, srv, "ca:{brief}"))
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := c.Get(ctx, "brief"); !errors.Is(err, cacheaside.ErrNotFound) {
			t.Errorf("Get(%q) after the negative TTL = %v; want ErrNotFound", "brief", err)
		}
		if n := calls.Load(); n != 2 {
			t.Errorf("loader called %d times after the marker expired, want 2", n)
		}
	})
}

// TestNegativeTTLZeroDisablesNegativeCaching proves WithNegativeTTL(0):
// nothing is stored and every Get of a missing key asks the loader.
func TestNegativeTTLZeroDisablesNegativeCaching(t *testing.T) {
	srv := redistest.Start(t)
	var calls atomic.Int64
	c := newCache(t, srv, notFoundLoader(&calls), cacheaside.WithNegativeTTL(0))
	ctx := testContext(t)
	for i := range 3 {
		if got, err := c.Get(ctx, "gone"); !errors.Is(err, cacheaside.ErrNotFound) {
			t.Fatalf("Get(%q) #%d = %q, %v; want an error matching ErrNotFound", "gone", i+1, got, err)
		}
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("3 Gets with WithNegativeTTL(0) called the loader %d times, want 3", n)
	}
	if keys := valueAndLockKeys(t, srv); len(keys) != 0 {
		t.Errorf("Redis keys with negative caching off = %q, want none but a generation (no marker, no lock)", keys)
	}
}

// TestNotFoundMarkerNeverOverwritesValue proves that a "not found" load
// does not replace a value another process stored meanwhile: the lock
// holder read the row before it was inserted; a waiter that gave up on the
// lock read it after and stored it; the holder's marker must not win.
func TestNotFoundMarkerNeverOverwritesValue(t *testing.T) {
	srv := redistest.Start(t)
	var inserted atomic.Bool
	entered, release := make(chan struct{}), make(chan struct{})
	var calls atomic.Int64
	load := func(ctx context.Context, key string) (string, error) {
		exists := inserted.Load()
		if calls.Add(1) == 1 {
			close(entered)
			<-release
		}
		if !exists {
			return "", fmt.Errorf("%q: %w", key, cacheaside.ErrNotFound)
		}
		return "row " + key, nil
	}
	holder := newCache(t, srv, load)
	waiter := newCache(t, srv, load, cacheaside.WithLockWait(20*time.Millisecond))
	ctx := testContext(t)

	held := getAsync(ctx, holder, "k")
	await(t, entered, "the holder's load to read the missing row")
	inserted.Store(true) // INSERT
	if got, err := waiter.Get(ctx, "k"); err != nil || got != "row k" {
		t.Fatalf("Get(%q) on the waiter = %q, %v; want %q, nil", "k", got, err, "row k")
	}
	close(release)
	r := await(t, held, "the holder's Get")
	if r.err != nil && !errors.Is(r.err, cacheaside.ErrNotFound) {
		t.Errorf("holder's Get(%q) = %q, %v; want the row or ErrNotFound", "k", r.val, r.err)
	}
	if v, ok := storedValue[string](t, srv, "ca:{k}"); !ok || v != "row k" {
		t.Errorf("Redis ca:{k} = %q (present %v), want the stored row %q, not a marker", v, ok, "row k")
	}
	if got, err := waiter.Get(ctx, "k"); err != nil || got != "row k" {
		t.Errorf("Get(%q) after both loads = %q, %v; want %q, nil", "k", got, err, "row k")
	}
}

// TestLoaderErrorReachesEveryCallerAndIsNotCached proves that a loader
// error other than ErrNotFound is returned to every caller that shared the
// load, is not stored, and the next Get asks the loader again.
func TestLoaderErrorReachesEveryCallerAndIsNotCached(t *testing.T) {
	srv := redistest.Start(t)
	errDB := errors.New("db: connection reset")
	var calls atomic.Int64
	c := newCache(t, srv, func(ctx context.Context, key string) (string, error) {
		calls.Add(1)
		time.Sleep(100 * time.Millisecond)
		return "", fmt.Errorf("load %q: %w", key, errDB)
	})
	const n = 50
	ctx := testContext(t)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			if got, err := c.Get(ctx, "k"); !errors.Is(err, errDB) {
				t.Errorf("Get(%q) = %q, %v; want the loader's error %v", "k", got, err, errDB)
			}
		})
	}
	close(start)
	wg.Wait()
	// Callers that arrive after a failed load start a new one, so the count
	// depends on scheduling; without coalescing it would be n.
	loaded := calls.Load()
	if loaded < 1 || loaded > n/2 {
		t.Errorf("%d concurrent Gets called a failing loader %d times, want between 1 and %d", n, loaded, n/2)
	}
	if s := c.Stats(); s.LoadErrors != uint64(loaded) || s.Misses != n {
		t.Errorf("Stats() = %+v, want LoadErrors %d, Misses %d", s, loaded, n)
	}
	if keys := valueAndLockKeys(t, srv); len(keys) != 0 {
		t.Errorf("Redis keys after failed loads = %q, want none but a generation (errors are not cached, locks released)", keys)
	}
	if _, err := c.Get(ctx, "k"); !errors.Is(err, errDB) || calls.Load() != loaded+1 {
		t.Errorf("Get(%q) after a failed load = %v with %d loads; want %v from a new load (%d)", "k", err, calls.Load(), errDB, loaded+1)
	}
}

// TestLoaderPanicBecomesPanicError proves that a loader panic does not
// crash the process: every caller that shared the load gets a
// *PanicError with the value and a stack, the lock is released, and the
// next Get loads again.
func TestLoaderPanicBecomesPanicError(t *testing.T) {
	srv := redistest.Start(t)
	var calls atomic.Int64
	var panicking atomic.Bool
	panicking.Store(true)
	c := newCache(t, srv, func(ctx context.Context, key string) (string, error) {
		calls.Add(1)
		if panicking.Load() {
			time.Sleep(100 * time.Millisecond)
			panic("boom")
		}
		return "value", nil
	})
	const n = 20
	ctx := testContext(t)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			_, err := c.Get(ctx, "k")
			pe, ok := isPanic(err)
			if !ok || pe.Value != "boom" || !strings.Contains(string(pe.Stack), "loader_test.go") {
				t.Errorf("Get(%q) error = %v; want a *PanicError with value %q and the loader's stack", "k", err, "boom")
			}
		})
	}
	close(start)
	wg.Wait()
	panics := calls.Load()
	if s := c.Stats(); s.Panics != uint64(panics) || s.LoadErrors != uint64(panics) || panics < 1 || panics > n/2 {
		t.Errorf("Stats() = %+v after %d panicking loads from %d Gets; want Panics = LoadErrors = loads, loads ≤ %d", s, panics, n, n/2)
	}
	if ex := srv.CLI(t, "EXISTS", "ca:{k}:lock"); ex != "0" {
		t.Errorf("EXISTS ca:{k}:lock after the loader panicked = %s, want 0", ex)
	}
	panicking.Store(false)
	if got, err := c.Get(ctx, "k"); err != nil || got != "value" || calls.Load() != panics+1 {
		t.Errorf("Get(%q) after a panic = %q, %v with %d loads; want %q, nil from load %d", "k", got, err, calls.Load(), "value", panics+1)
	}
}

// TestLoaderPanicWithNotFoundErrorIsNotCached proves that a panic is never
// mistaken for a "not found" answer, even when the panic value is an error
// that wraps ErrNotFound (as a must(err) helper would panic with): it is
// counted as a panic, no marker is stored, and the next Get loads again.
func TestLoaderPanicWithNotFoundErrorIsNotCached(t *testing.T) {
	srv := redistest.Start(t)
	var calls atomic.Int64
	c := newCache(t, srv, func(ctx context.Context, key string) (string, error) {
		if calls.Add(1) == 1 {
			panic(fmt.Errorf("must: %w", cacheaside.ErrNotFound))
		}
		return "value", nil
	})
	ctx := testContext(t)
	if _, err := c.Get(ctx, "k"); err == nil {
		t.Fatalf("Get(%q) with a panicking loader = nil error, want a *PanicError", "k")
	} else if _, ok := isPanic(err); !ok {
		t.Errorf("Get(%q) error = %v, want a *PanicError", "k", err)
	}
	if s := c.Stats(); s.Panics != 1 {
		t.Errorf("Stats().Panics = %d after a loader panic, want 1", s.Panics)
	}
	if isNotFoundMarker(t, srv, "ca:{k}") {
		t.Errorf("Redis ca:{k} holds a not-found marker after a loader panic, want nothing cached")
	}
	if got, err := c.Get(ctx, "k"); err != nil || got != "value" {
		t.Errorf("Get(%q) after the panic = %q, %v; want %q, nil from a new load", "k", got, err, "value")
	}
}

type ctxKey struct{}

// TestCallerCancelDoesNotCancelSharedLoad proves that a caller whose
// context ends returns ctx.Err() at once, while the load goes on for the
// other callers with a context that is not cancelled, and runs once.
func TestCallerCancelDoesNotCancelSharedLoad(t *testing.T) {
	srv := redistest.Start(t)
	var calls atomic.Int64
	entered, release := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	loaderCtxErr := make(chan error, 1)
	c := newCache(t, srv, func(ctx context.Context, key string) (string, error) {
		calls.Add(1)
		close(entered)
		<-release
		loaderCtxErr <- ctx.Err()
		return "value", nil
	})
	cctx, cancel := context.WithCancel(testContext(t))
	impatient := getAsync(cctx, c, "k")
	await(t, entered, "the load to start")
	patient := getAsync(testContext(t), c, "k")

	cancel()
	// The loader is still blocked: the caller cannot be waiting for it.
	if r := await(t, impatient, "the cancelled Get to return"); !errors.Is(r.err, context.Canceled) {
		t.Errorf("Get(%q) with a cancelled context = %q, %v; want context.Canceled", "k", r.val, r.err)
	}
	close(release)
	if r := await(t, patient, "the other caller"); r.err != nil || r.val != "value" {
		t.Errorf("Get(%q) sharing the load = %q, %v; want %q, nil", "k", r.val, r.err, "value")
	}
	if err := await(t, loaderCtxErr, "the loader's context check"); err != nil {
		t.Errorf("loader's ctx.Err() after the first caller cancelled = %v, want nil", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("loader called %d times, want 1", n)
	}
	if v, ok := storedValue[string](t, srv, "ca:{k}"); !ok || v != "value" {
		t.Errorf("Redis ca:{k} = %q (present %v), want %q", v, ok, "value")
	}
}

// TestGetPassesContextValuesToLoader proves that the loader sees the
// caller's context values (trace IDs, tenants) although it is detached from
// the caller's cancellation.
func TestGetPassesContextValuesToLoader(t *testing.T) {
	srv := redistest.Start(t)
	c := newCache(t, srv, func(ctx context.Context, key string) (string, error) {
		v, _ := ctx.Value(ctxKey{}).(string)
		return v, nil
	})
	ctx := context.WithValue(testContext(t), ctxKey{}, "trace-123")
	if got, err := c.Get(ctx, "k"); err != nil || got != "trace-123" {
		t.Errorf("Get(%q) = %q, %v; want the caller's context value %q, nil", "k", got, err, "trace-123")
	}
}

// TestGetWithDoneContextReturnsAtOnce proves that a Get whose context is
// already done returns its error without touching Redis or the loader.
func TestGetWithDoneContextReturnsAtOnce(t *testing.T) {
	srv := redistest.Start(t)
	var calls atomic.Int64
	c := newCache(t, srv, func(ctx context.Context, key string) (string, error) {
		calls.Add(1)
		return "value", nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	if got, err := c.Get(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Get(%q) with an expired context = %q, %v; want context.DeadlineExceeded", "k", got, err)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("loader called %d times for a Get with an expired context, want 0", n)
	}
}
