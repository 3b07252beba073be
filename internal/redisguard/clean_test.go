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
	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
)

// errDown is a call's failure: not a reply, so IsOutage.
var errDown = errors.New("connection reset")

// cleanGuard returns a Guard on a real server whose breaker opens after
// failures consecutive failures; its calls below answer or fail without
// reaching the server, as the test says.
func cleanGuard(t *testing.T, failures uint32, cooldown time.Duration) *Guard {
	t.Helper()
	return cleanGuardOn(t, false, failures, cooldown)
}

// cleanGuardOn is cleanGuard with a client that honours context deadlines
// when inline, so that its calls run on the caller's goroutine (inline.go).
func cleanGuardOn(t *testing.T, inline bool, failures uint32, cooldown time.Duration) *Guard {
	t.Helper()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: inline})
	t.Cleanup(func() { _ = rdb.Close() })
	g := New(Config{Client: rdb, Inline: inline, Budget: time.Second, Limit: 2 * time.Second, MaxAbandoned: 64,
		BreakerFailures: failures, BreakerCooldown: cooldown})
	t.Cleanup(g.Close)
	return g
}

// bothPaths runs test on a watched and on an inline Guard from
// cleanGuardOn.
func bothPaths(t *testing.T, failures uint32, cooldown time.Duration, test func(t *testing.T, g *Guard)) {
	for _, inline := range []bool{false, true} {
		t.Run(fmt.Sprintf("inline=%v", inline), func(t *testing.T) {
			test(t, cleanGuardOn(t, inline, failures, cooldown))
		})
	}
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
	if _, _, clean := n.clean.enter(); !clean {
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
	if _, _, clean := n.clean.enter(); !clean {
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
				round, c.ConsecutiveFailures, n.clean.w.Load()&cleanFlag != 0)
		}
	}
}

// held is a call on g started in the background that ends with the error
// sent on its channel: started is closed once its function runs, and the
// call's own error arrives on done.
type held struct {
	end     chan error
	started chan struct{}
	done    chan error
}

// hold starts a call on g that runs until h.end receives its error.
func hold(g *Guard) *held {
	h := &held{end: make(chan error), started: make(chan struct{}), done: make(chan error, 1)}
	go func() {
		h.done <- g.Do(context.Background(), "k", func(context.Context) error {
			close(h.started)
			return <-h.end
		})
	}()
	<-h.started
	return h
}

// finish ends h's call with err and waits for its Do to return.
func (h *held) finish(err error) error {
	h.end <- err
	return <-h.done
}

// TestBreakerSuccessBetweenFailuresResets: a success that ends between two
// failures resets the count even when its call began on a clean node
// (before the first failure, skipping Execute): failures, successes,
// failures, successes and a failure, never 3 in a row as they end, must
// not open a breaker of 3.
func TestBreakerSuccessBetweenFailuresResets(t *testing.T) {
	bothPaths(t, 3, time.Minute, func(t *testing.T, g *Guard) {
		_ = call(g, nil)
		s1, s2 := hold(g), hold(g) // begun on the clean node
		_ = call(g, errDown)
		if err := s1.finish(nil); err != nil {
			t.Fatalf("held call = %v, want nil", err)
		}
		_ = call(g, errDown)
		if err := s2.finish(nil); err != nil {
			t.Fatalf("held call = %v, want nil", err)
		}
		_ = call(g, errDown)
		if s := g.State(); s != Closed {
			t.Errorf("State() = %v after failure, success, failure, success, failure, want Closed", s)
		}
	})
}

// heldAcrossTrip returns a call on g, a Guard whose breaker opens at the
// first failure, begun on its clean node before a failure opened the
// breaker, once the cooldown has passed: the breaker is then half-open.
func heldAcrossTrip(t *testing.T, g *Guard, cooldown time.Duration) *held {
	t.Helper()
	_ = call(g, nil)
	old := hold(g)
	_ = call(g, errDown)
	if s := g.State(); s != Open {
		t.Fatalf("State() = %v after a failure with BreakerFailures 1, want Open", s)
	}
	time.Sleep(2 * cooldown)
	if s := g.State(); s != HalfOpen {
		t.Fatalf("State() = %v after the cooldown, want HalfOpen", s)
	}
	return old
}

// TestBreakerIgnoresFailureBegunBeforeTrip: a call that began before its
// breaker opened says nothing about the node once the breaker has closed
// again: its failure must not open the recovered breaker, as gobreaker
// ignores a call of an earlier generation.
func TestBreakerIgnoresFailureBegunBeforeTrip(t *testing.T) {
	const cooldown = 50 * time.Millisecond
	bothPaths(t, 1, cooldown, func(t *testing.T, g *Guard) {
		old := heldAcrossTrip(t, g, cooldown)
		if err := call(g, nil); err != nil {
			t.Fatalf("probe after the cooldown = %v, want nil", err)
		}
		_ = call(g, nil)
		_ = call(g, nil)
		_ = old.finish(errDown)
		if s := g.State(); s != Closed {
			t.Errorf("State() = %v after a failure of a call begun before the trip, want Closed (it is of an earlier generation)", s)
		}
	})
}

// TestBreakerIgnoresSuccessBegunBeforeTrip: a call that began before its
// breaker opened must not close it when it succeeds after the cooldown:
// only the half-open probe decides, and no other call runs beside it.
func TestBreakerIgnoresSuccessBegunBeforeTrip(t *testing.T) {
	const cooldown = 50 * time.Millisecond
	bothPaths(t, 1, cooldown, func(t *testing.T, g *Guard) {
		old := heldAcrossTrip(t, g, cooldown)
		_ = old.finish(nil)
		if s := g.State(); s != HalfOpen {
			t.Errorf("State() = %v after a success of a call begun before the trip, want HalfOpen (only the probe decides)", s)
		}
		probe := hold(g)
		if err := call(g, nil); !errors.Is(err, ErrSkipped) {
			t.Errorf("call while the probe runs = %v, want ErrSkipped", err)
		}
		_ = probe.finish(nil)
		if s := g.State(); s != Closed {
			t.Errorf("State() = %v after the probe succeeded, want Closed", s)
		}
	})
}

// TestBreakerCleanOnlyWhileClosedWithoutFailure: while successes and
// failures race, and the breaker trips and recovers, the node is never
// seen clean while its breaker is open, half-open, or holds a failure: a
// monitor reads the state word, the breaker, and the word again, and
// judges the breaker whenever both reads found the node clean and alike.
func TestBreakerCleanOnlyWhileClosedWithoutFailure(t *testing.T) {
	g := cleanGuard(t, 3, time.Millisecond)
	n := g.cbs.forKey("k")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if rand.IntN(3) == 0 {
					_ = call(g, errDown)
				} else {
					_ = call(g, nil)
				}
			}
		})
	}
	var seen, bad int
	var first string
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); {
		w1 := n.clean.w.Load()
		st, c := n.cb.State(), n.cb.Counts()
		if w1&1 == 0 || n.clean.w.Load() != w1 {
			continue
		}
		seen++
		if st != gobreaker.StateClosed || c.ConsecutiveFailures != 0 {
			if bad++; bad == 1 {
				first = fmt.Sprintf("%v with %d consecutive failures", st, c.ConsecutiveFailures)
			}
		}
	}
	close(stop)
	wg.Wait()
	if bad > 0 {
		t.Errorf("node seen clean %d times of %d while its breaker was not closed without failures (first: %s)", bad, seen, first)
	}
	t.Logf("node seen clean %d times; opens %d", seen, g.Counts().Opens)
}
