package cacheaside_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// The tests in this file cover the flights of a warm-up with a batch
// loader: the keys it locks are loaded as their flights in this process,
// so the Gets and GetManys that come during the load wait for it; those
// flights are finished whatever ends the load (a panic, Close), with a
// value loaded again after a fill conflict.
// outageload_test.go has the same when Redis dies during the load.

// awaitWaiters waits, inside a loader, until n contexts wait for the load
// running under ctx (cacheaside.Waiters: the Gets that joined its flights),
// and reports whether they did before ctx ended or 10 seconds passed.
func awaitWaiters(ctx context.Context, n int) bool {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if len(cacheaside.Waiters(ctx)) >= n {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return false
}

// TestBatchWarmUpLoaderPanic: the batch loader of a warm-up panics while a
// Get of key 1 and a GetMany of keys 1 and 2 wait for its flights. The
// panic does not crash the process: each of them, and Warm, gets an error
// matching *PanicError, and each key was loaded once (the panicking call).
func TestBatchWarmUpLoaderPanic(t *testing.T) {
	srv := redistest.Start(t)
	var armed, joined atomic.Bool
	var calls, singles atomic.Int64
	inLoad := make(chan struct{})
	batch := func(ctx context.Context, keys []int) (map[int]string, error) {
		if !armed.Load() {
			return nil, nil
		}
		if calls.Add(1) == 1 { // the warm-up's load
			close(inLoad)
			// The Get joins key 1's flight, the GetMany both.
			joined.Store(awaitWaiters(ctx, 3))
			panic("warm-up loader panics")
		}
		return nil, nil
	}
	one := func(ctx context.Context, k int) (string, error) {
		if armed.Load() {
			singles.Add(1)
		}
		return faultValue(k), nil
	}
	c := newFaultCache(t, srv.Client(t), one,
		cacheaside.WithRedisTimeout(time.Second), // not a fault test
		cacheaside.WithBatchLoader(batch),
		cacheaside.WithWarmupKeys(1, 2),
		cacheaside.WithRestartCheck(0)) // explicit Warm only
	mustGet(t, c, 0) // connects
	armed.Store(true)
	ctx := testContext(t)
	warmed := make(chan error, 1)
	go func() { warmed <- c.Warm(ctx) }()
	<-inLoad
	got := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, 1)
		got <- err
	}()
	gotMany := make(chan error, 1)
	go func() {
		_, err := c.GetMany(ctx, []int{1, 2})
		gotMany <- err
	}()
	var pe *cacheaside.PanicError
	if err := <-got; !errors.As(err, &pe) {
		t.Errorf("Get(1) during the warm-up's panicking batch load = %v, want a *PanicError", err)
	}
	if err := <-gotMany; !errors.As(err, &pe) {
		t.Errorf("GetMany(1, 2) during the warm-up's panicking batch load = %v, want a *PanicError", err)
	}
	if err := <-warmed; !errors.As(err, &pe) {
		t.Errorf("Warm() with a panicking batch loader = %v, want a *PanicError", err)
	}
	if !joined.Load() {
		t.Error("the Get and the GetMany did not join the warm-up's flights: cacheaside.Waiters in its load never saw the 3 contexts")
	}
	if n, m := calls.Load(), singles.Load(); n != 1 || m != 0 {
		t.Errorf("batch loader called %d times and single loader %d times, want 1 and 0 (the Gets waited for the warm-up)", n, m)
	}
	if s := c.Stats(); s.Panics != 1 {
		t.Errorf("Stats().Panics = %d, want 1", s.Panics)
	}
}

// TestCloseDuringBatchWarmUp: Close comes while the warm-up that the
// restart watcher started (Redis has no marker) runs its batch load, and a
// Get waits for the load's flight. Close cancels the load; the flight is
// finished, so the Get returns, and Close returns with no goroutine left
// behind (TestMain's goleak).
func TestCloseDuringBatchWarmUp(t *testing.T) {
	srv := redistest.Start(t)
	var joined atomic.Bool
	inLoad := make(chan struct{})
	var calls atomic.Int64
	batch := func(ctx context.Context, keys []int) (map[int]string, error) {
		if calls.Add(1) == 1 { // the warm-up's load
			close(inLoad)
			joined.Store(awaitWaiters(ctx, 1))
		}
		<-ctx.Done() // until Close
		return nil, ctx.Err()
	}
	c := newFaultCache(t, srv.Client(t), func(ctx context.Context, k int) (string, error) {
		return faultValue(k), nil
	},
		cacheaside.WithRedisTimeout(time.Second), // not a fault test
		cacheaside.WithBatchLoader(batch),
		cacheaside.WithWarmupKeys(1, 2),
		cacheaside.WithRestartCheck(time.Hour)) // one check, at once: Redis is empty
	select {
	case <-inLoad:
	case <-time.After(15 * time.Second):
		t.Fatal("the restart watcher's warm-up did not call the batch loader within 15s")
	}
	got := make(chan error, 1)
	go func() {
		_, err := c.Get(context.Background(), 1) // no deadline: only the flight ends it
		got <- err
	}()
	waitFor(t, 15*time.Second, "the Get joins the warm-up's flight", joined.Load)
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case err := <-got:
		if err == nil {
			t.Errorf("Get(1) waiting for a warm-up's load that Close cancelled = nil error, want an error")
		}
		t.Logf("Get(1) after Close cancelled the warm-up's load: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("Get(1) waiting for the warm-up's flight did not return within 15s of Close")
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close() = %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Close() during a batch warm-up did not return within 15s")
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("batch loader called %d times, want 1 (the warm-up's)", n)
	}
}

// TestBatchWarmUpConflictResolvedForGets: key 1 is invalidated while the
// batch load of a warm-up runs and a Get of it waits for the load's flight.
// The warm-up's fill conflicts, so its value goes to no one: the Get gets
// the value loaded after the invalidation, as from a flight of its own.
func TestBatchWarmUpConflictResolvedForGets(t *testing.T) {
	srv := redistest.Start(t)
	var armed, joined atomic.Bool
	var version atomic.Int64 // the database's, raised before each Invalidate
	version.Store(1)
	value := func(k int) string { return fmt.Sprintf("%s@%d", faultValue(k), version.Load()) }
	var calls atomic.Int64
	inLoad, release := make(chan struct{}), make(chan struct{})
	batch := func(ctx context.Context, keys []int) (map[int]string, error) {
		out := make(map[int]string, len(keys))
		for _, k := range keys {
			out[k] = value(k)
		}
		if armed.Load() && calls.Add(1) == 1 { // the warm-up's load
			close(inLoad)
			joined.Store(awaitWaiters(ctx, 1))
			select {
			case <-release:
			case <-ctx.Done(): // the test failed: Warm's context ends
			}
		}
		return out, nil
	}
	c := newFaultCache(t, srv.Client(t), func(ctx context.Context, k int) (string, error) {
		return value(k), nil
	},
		cacheaside.WithRedisTimeout(time.Second), // not a fault test
		cacheaside.WithBatchLoader(batch),
		cacheaside.WithWarmupKeys(1),
		cacheaside.WithRestartCheck(0)) // explicit Warm only
	armed.Store(true)
	ctx := testContext(t)
	warmed := make(chan error, 1)
	go func() { warmed <- c.Warm(ctx) }()
	<-inLoad
	got := getAsync(ctx, c, 1)
	waitFor(t, 15*time.Second, "the Get joins the warm-up's flight", joined.Load)
	version.Store(2)
	if err := c.Invalidate(ctx, 1); err != nil {
		t.Fatalf("Invalidate(1) during the warm-up's load: %v", err)
	}
	close(release)
	want := faultValue(1) + "@2"
	if a := await(t, got, "Get(1)"); a.err != nil || a.val != want {
		t.Errorf("Get(1) waiting for a warm-up's load that an Invalidate overtook = %q, %v, want %q, nil", a.val, a.err, want)
	}
	if err := <-warmed; err != nil {
		t.Errorf("Warm() = %v, want nil", err)
	}
	if s := c.Stats(); s.FillConflicts == 0 {
		t.Errorf("Stats().FillConflicts = 0, want the warm-up's fill to have conflicted")
	}
	mustGetValue(t, c, 1, want, "after the warm-up")
}
