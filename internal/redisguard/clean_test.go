package redisguard

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
)

// errDown is a call's failure: not a reply, so IsOutage.
var errDown = errors.New("connection reset")

// cleanGuard returns a Guard on a real server whose breaker opens after
// failures consecutive failures; its calls below answer or fail without
// reaching the server, as the test says.
func cleanGuard(t *testing.T, failures uint32, cooldown time.Duration) *Guard {
	t.Helper()
	srv := redistest.Start(t)
	g := New(Config{Client: srv.Client(t), Budget: time.Second, Limit: 2 * time.Second, MaxAbandoned: 64,
		BreakerFailures: failures, BreakerCooldown: cooldown})
	t.Cleanup(g.Close)
	return g
}

// call runs one call on g that ends with err.
func call(g *Guard, err error) error {
	return g.Do(context.Background(), "k", func(context.Context) error { return err })
}

// TestBreakerTripsOnConsecutiveFailuresOnly: calls on a clean node skip the
// breaker's Execute, yet the breaker still opens after BreakerFailures
// failures in a row and only then: a success between failures resets the
// count, as it does through Execute.
func TestBreakerTripsOnConsecutiveFailuresOnly(t *testing.T) {
	g := cleanGuard(t, 3, time.Minute)
	n := g.cbs.forKey("k")
	_ = call(g, nil)
	if !n.clean.clean() {
		t.Fatalf("node not clean after a success on a closed breaker")
	}
	before := n.cb.Counts().Requests
	for range 10 {
		_ = call(g, nil)
	}
	if got := n.cb.Counts().Requests; got != before {
		t.Errorf("breaker counted %d requests for 10 successes on a clean node, want 0 (they skip Execute)", got-before)
	}
	for _, step := range []error{errDown, errDown, nil, errDown, errDown, nil, nil, errDown, errDown} {
		_ = call(g, step)
	}
	if s := g.State(); s != Closed {
		t.Fatalf("State() = %v after failures never 3 in a row, want Closed", s)
	}
	// A slow call neither counts nor resets: the node stays dirty, and the
	// success after it resets the count through Execute.
	slowErr := fmt.Errorf("%w: cut at the budget", ErrSlow)
	for _, step := range []error{nil, errDown, slowErr, nil, errDown, errDown} {
		_ = call(g, step)
	}
	if s := g.State(); s != Closed {
		t.Fatalf("State() = %v after a failure, a slow call, a success and 2 failures, want Closed", s)
	}
	_ = call(g, errDown) // the third in a row
	if s := g.State(); s != Open {
		t.Fatalf("State() = %v after 3 failures in a row, want Open", s)
	}
	if err := call(g, nil); !errors.Is(err, ErrSkipped) {
		t.Errorf("call with the breaker open = %v, want ErrSkipped", err)
	}
}

// TestBreakerCleanAgainAfterRecovery: once an open breaker's probe
// succeeds and it closes, the node becomes clean again (its calls skip
// Execute), and a new run of failures opens it as before.
func TestBreakerCleanAgainAfterRecovery(t *testing.T) {
	const cooldown = 50 * time.Millisecond
	g := cleanGuard(t, 1, cooldown)
	n := g.cbs.forKey("k")
	_ = call(g, nil)
	_ = call(g, errDown)
	if s := g.State(); s != Open {
		t.Fatalf("State() = %v after a failure with BreakerFailures 1, want Open", s)
	}
	time.Sleep(2 * cooldown)
	if err := call(g, nil); err != nil {
		t.Fatalf("probe after the cooldown = %v, want nil", err)
	}
	if s := g.State(); s != Closed {
		t.Fatalf("State() = %v after a successful probe, want Closed", s)
	}
	_ = call(g, nil)
	if !n.clean.clean() {
		t.Errorf("node not clean after successes on a closed breaker")
	}
	_ = call(g, errDown)
	if s := g.State(); s != Open {
		t.Errorf("State() = %v after a failure on a clean node, want Open", s)
	}
}

// TestBreakerCleanUnderRaces: successes and failures from many goroutines
// at once never leave the node clean while the breaker holds a failure
// count: after them, a success and then BreakerFailures-1 failures must
// not open it, and one more must.
func TestBreakerCleanUnderRaces(t *testing.T) {
	const failures = 1_000_000 // never reached by the mixed calls
	g := cleanGuard(t, failures, time.Minute)
	n := g.cbs.forKey("k")
	for round := range 20 {
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 200 {
					if rand.IntN(3) == 0 {
						_ = call(g, errDown)
					} else {
						_ = call(g, nil)
					}
				}
			})
		}
		wg.Wait()
		_ = call(g, nil)
		_ = call(g, nil)
		if c := n.cb.Counts(); c.ConsecutiveFailures != 0 {
			t.Fatalf("round %d: breaker holds %d consecutive failures after two successes (clean %v), want 0",
				round, c.ConsecutiveFailures, n.clean.clean())
		}
	}
}
