package redisguard

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"
)

// TestBreakerCleanNodeCountsPanics: a call on a clean node that panics
// fails like any other, and BreakerFailures of them in a row open the
// breaker.
func TestBreakerCleanNodeCountsPanics(t *testing.T) {
	bothPaths(t, 3, time.Minute, func(t *testing.T, g *Guard) {
		_ = call(g, nil)
		for i := range 3 {
			err := g.Do(context.Background(), "k", func(context.Context) error { panic("boom") })
			if err == nil {
				t.Fatalf("Do #%d of a panicking call = nil, want its error", i)
			}
		}
		if s := g.State(); s != Open {
			t.Errorf("State() = %v after 3 panics, want Open", s)
		}
	})
}

// TestBreakerCleanNodeCountsFailedBatches: Guard.Failed counts the reads
// of a failed batch on a clean node as consecutive failures, reset by a
// success between, and not a skipped batch's.
func TestBreakerCleanNodeCountsFailedBatches(t *testing.T) {
	g := cleanGuard(t, 3, time.Minute)
	_ = call(g, nil)
	g.Failed("k", errDown, 2)
	_ = call(g, nil)
	g.Failed("k", errDown, 2)
	_ = call(g, nil)
	g.Failed("k", ErrSkipped, 5)
	g.Failed("k", errDown, 2)
	if s := g.State(); s != Closed {
		t.Fatalf("State() = %v after batches of 2 failed reads between successes, want Closed", s)
	}
	g.Failed("k", errDown, 1)
	if s := g.State(); s != Open {
		t.Fatalf("State() = %v after 3 in a row, want Open", s)
	}
}

// TestBreakerCleanNodeExcludesCallerGone: a call whose caller's context
// ended counts neither way on a clean node: it neither counts as a
// failure nor resets the count between two failures.
func TestBreakerCleanNodeExcludesCallerGone(t *testing.T) {
	bothPaths(t, 2, time.Minute, func(t *testing.T, g *Guard) {
		_ = call(g, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		for range 5 {
			_ = g.Do(ctx, "k", func(context.Context) error { return errDown })
		}
		if s := g.State(); s != Closed {
			t.Fatalf("State() = %v after cancelled failures, want Closed", s)
		}
		_ = call(g, errDown)
		_ = g.Do(ctx, "k", func(context.Context) error { return errDown })
		if s := g.State(); s != Closed {
			t.Fatalf("State() = %v after a failure and a cancelled one, want Closed", s)
		}
		_ = call(g, errDown)
		if s := g.State(); s != Open {
			t.Fatalf("State() = %v after 2 failures around an excluded one, want Open", s)
		}
		if err := call(g, nil); !errors.Is(err, ErrSkipped) {
			t.Fatalf("call with the breaker open = %v, want ErrSkipped", err)
		}
	})
}

// TestBreakerDisabledNeverSkips: with BreakerFailures 0 no failure, of a
// call or of a batch, skips a call.
func TestBreakerDisabledNeverSkips(t *testing.T) {
	g := cleanGuard(t, 0, time.Minute)
	for range 10 {
		_ = call(g, errDown)
	}
	g.Failed("k", errDown, 10)
	if err := call(g, nil); err != nil {
		t.Fatalf("call after failures with breakers disabled = %v, want nil", err)
	}
	if s := g.State(); s != Disabled {
		t.Fatalf("State() = %v, want Disabled", s)
	}
}

// TestBreakerHalfOpenLetsOneProbe: calls that start together on a
// half-open breaker, after a trip from a clean node, send one probe: no
// two calls run while it is half-open.
func TestBreakerHalfOpenLetsOneProbe(t *testing.T) {
	const cooldown = 20 * time.Millisecond
	bothPaths(t, 1, cooldown, func(t *testing.T, g *Guard) {
		n := g.cbs.forKey("k")
		for phase := range 30 {
			_ = call(g, nil)
			_ = call(g, nil)
			_ = call(g, errDown)
			time.Sleep(2 * cooldown)
			var inHalf, sent atomic.Int32
			var wg sync.WaitGroup
			start := make(chan struct{})
			for range 8 {
				wg.Go(func() {
					<-start
					_ = g.Do(context.Background(), "k", func(context.Context) error {
						sent.Add(1)
						if n.cb.State() == gobreaker.StateHalfOpen {
							inHalf.Add(1)
						}
						time.Sleep(3 * time.Millisecond)
						return nil
					})
				})
			}
			close(start)
			wg.Wait()
			if inHalf.Load() > 1 {
				t.Fatalf("phase %d: %d calls ran while half-open, want 1 probe", phase, inHalf.Load())
			}
		}
	})
}
