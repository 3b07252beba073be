package cacheaside_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestWarmCancelledLeavesJoinedGetsTheirValue: a Get of key 1 joins the
// flight of a warm-up's load of it, then the warm-up's context is
// cancelled. Warm returns at once with that error, and the Get, whose own
// context is live, gets the value the load returns (one load), not the
// warm-up's cancellation; with a loader of one key and with a batch
// loader. Before, the load ran under Warm's context: the loader saw it
// cancelled, and the Get returned "context canceled".
func TestWarmCancelledLeavesJoinedGetsTheirValue(t *testing.T) {
	for _, batched := range []bool{false, true} {
		t.Run(map[bool]string{false: "loader", true: "batch loader"}[batched], func(t *testing.T) {
			srv := redistest.Start(t)
			var armed atomic.Bool
			var loads atomic.Int64
			inLoad, joined, release := make(chan struct{}), make(chan struct{}), make(chan struct{})
			// The load waits for the Get to join it, then for release,
			// and honours its context as a database driver does.
			hold := func(ctx context.Context) error {
				loads.Add(1)
				close(inLoad)
				if awaitWaiters(ctx, 1) {
					close(joined)
				}
				select {
				case <-release:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			one := func(ctx context.Context, k int) (string, error) {
				if armed.Load() && k == 1 {
					if err := hold(ctx); err != nil {
						return "", err
					}
				}
				return faultValue(k), nil
			}
			opts := []cacheaside.Option{
				cacheaside.WithRedisTimeout(time.Second), // not a fault test
				cacheaside.WithWarmupKeys(1),
				cacheaside.WithRestartCheck(0), // explicit Warm only
			}
			if batched {
				opts = append(opts, cacheaside.WithBatchLoader(func(ctx context.Context, keys []int) (map[int]string, error) {
					m := make(map[int]string, len(keys))
					for _, k := range keys {
						v, err := one(ctx, k)
						if err != nil {
							return nil, err
						}
						m[k] = v
					}
					return m, nil
				}))
			}
			c := newFaultCache(t, srv.Client(t), one, opts...)
			mustGet(t, c, 0) // connects
			armed.Store(true)
			wctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			warmed := make(chan error, 1)
			go func() { warmed <- c.Warm(wctx) }()
			<-inLoad
			got := make(chan error, 1)
			go func() {
				v, err := c.Get(testContext(t), 1)
				if err == nil && v != faultValue(1) {
					err = errors.New("Get(1) = " + v)
				}
				got <- err
			}()
			// The Get joins the load's flight (the loader waits for it),
			// then Warm is cancelled.
			select {
			case <-joined:
			case <-time.After(15 * time.Second):
				t.Fatalf("the Get did not join the warm-up's flight within 15s")
			}
			cancel()
			select {
			case err := <-warmed:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Warm after its context was cancelled = %v, want context.Canceled", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("Warm did not return within 5s of its context's cancellation, with its load still running")
			}
			close(release)
			if err := <-got; err != nil {
				t.Errorf("Get(1), joined to a warm-up cancelled during its load = %v, want %q, nil", err, faultValue(1))
			}
			if n := loads.Load(); n != 1 {
				t.Errorf("key 1 loaded %d times, want 1 (the warm-up's load, which the Get joined)", n)
			}
		})
	}
}
