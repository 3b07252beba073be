package flight

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type ctxKey struct{}

// TestJoinShareOneResult: every caller that joins a flight while it is in
// the air is handed the leader's result; exactly one of them leads.
func TestJoinSharesOneResult(t *testing.T) {
	var g Group[int]
	const callers = 64
	var leaders atomic.Int64
	start := make(chan struct{})
	joined := make(chan struct{}, callers)
	results := make(chan int, callers)
	var wg sync.WaitGroup
	var lead *Call[int]
	var leadMu sync.Mutex
	for range callers {
		wg.Go(func() {
			<-start
			c, leader := g.Join(context.Background(), "k")
			if leader {
				leaders.Add(1)
				g.Hold(c)
				leadMu.Lock()
				lead = c
				leadMu.Unlock()
			}
			joined <- struct{}{}
			<-c.Done()
			results <- c.Result()
		})
	}
	close(start)
	for range callers {
		<-joined
	}
	leadMu.Lock()
	c := lead
	leadMu.Unlock()
	g.Finish("k", c, 42)
	wg.Wait()
	close(results)
	if n := leaders.Load(); n != 1 {
		t.Fatalf("leaders = %d, want 1", n)
	}
	for r := range results {
		if r != 42 {
			t.Fatalf("Result() = %d, want 42", r)
		}
	}
}

// TestFinishStartsANewFlight: after Finish, the next Join of the key leads
// a new flight.
func TestFinishStartsANewFlight(t *testing.T) {
	var g Group[string]
	c1, leader := g.Join(context.Background(), "k")
	if !leader {
		t.Fatal("first Join: leader = false, want true")
	}
	g.Finish("k", c1, "a")
	c2, leader := g.Join(context.Background(), "k")
	if !leader {
		t.Fatal("Join after Finish: leader = false, want true")
	}
	g.Finish("k", c2, "b")
}

// TestForgetDetachesLaterCallers: callers already waiting keep the old
// flight; a Join after Forget starts a new one, and finishing the old one
// does not remove the new one.
func TestForgetDetachesLaterCallers(t *testing.T) {
	var g Group[string]
	old, _ := g.Join(context.Background(), "k")
	waiter, leader := g.Join(context.Background(), "k")
	if leader || waiter != old {
		t.Fatal("second Join did not join the flight in the air")
	}
	g.Forget("k")
	fresh, leader := g.Join(context.Background(), "k")
	if !leader || fresh == old {
		t.Fatal("Join after Forget joined the old flight, want a new one")
	}
	g.Finish("k", old, "old")
	select {
	case <-waiter.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the old flight's waiter was never released")
	}
	if got := waiter.Result(); got != "old" {
		t.Fatalf("old flight's Result() = %q, want %q", got, "old")
	}
	again, leader := g.Join(context.Background(), "k")
	if leader || again != fresh {
		t.Fatal("finishing the old flight removed the new one")
	}
	g.Finish("k", fresh, "new")
	if got := again.Result(); got != "new" {
		t.Fatalf("new flight's Result() = %q, want %q", got, "new")
	}
}

// TestUnsharedFlightAllocatesNothing: a flight that nobody joined is
// recycled, so a steady stream of uncontended requests allocates nothing.
func TestUnsharedFlightAllocatesNothing(t *testing.T) {
	var g Group[int]
	ctx := context.Background()
	c, _ := g.Join(ctx, "k") // make the map
	g.Finish("k", c, 0)
	allocs := testing.AllocsPerRun(1000, func() {
		c, _ := g.Join(ctx, "k")
		g.Finish("k", c, 1)
	})
	// sync.Pool may drop an item at a GC; a fraction of an allocation per
	// run is that, a whole one is a leak of the design.
	if allocs >= 1 {
		t.Fatalf("allocations per uncontended flight = %v, want 0", allocs)
	}
}

// TestWaitersTracked: with Track, the contexts of joining callers are
// recorded (at most MaxWaiters) and carried by WithWaiters; without it,
// none are.
func TestWaitersTracked(t *testing.T) {
	g := Group[int]{Track: true}
	c, _ := g.Join(context.Background(), "k")
	for i := range MaxWaiters + 10 {
		g.Join(context.WithValue(context.Background(), ctxKey{}, i), "k")
	}
	ctxs := Contexts(WithWaiters(context.Background(), nil, c.Waiters()))
	if len(ctxs) != MaxWaiters {
		t.Fatalf("len(Contexts) = %d, want %d", len(ctxs), MaxWaiters)
	}
	if got := ctxs[0].Value(ctxKey{}); got != 0 {
		t.Fatalf("first waiter's value = %v, want 0", got)
	}
	g.Finish("k", c, 0)

	var off Group[int]
	c, _ = off.Join(context.Background(), "k")
	off.Join(context.Background(), "k")
	if w := c.Waiters(); w != nil {
		t.Fatalf("Waiters() without Track = %v, want nil", w)
	}
	if ctxs := Contexts(WithWaiters(context.Background(), c.Waiters())); ctxs != nil {
		t.Fatalf("Contexts without Track = %v, want nil", ctxs)
	}
	off.Finish("k", c, 0)
}

// TestHotFlightWaitersRecycled: the contexts of the callers that joined a
// flight nobody held (a Redis hit the leader answered itself) are not
// kept once it finishes, so the next flight of a hot key records its
// joiners without growing a new list: a flight that 64 callers joined
// allocates its Call and its Done channel, nothing per joiner (8 more
// objects when its list grows from nothing). The bound leaves room for
// the race detector, whose sync.Pool drops a quarter of what is put in it.
func TestHotFlightWaitersRecycled(t *testing.T) {
	g := Group[int]{Track: true}
	ctx := context.Background()
	const joiners = 64
	flight := func() {
		c, _ := g.Join(ctx, "k")
		for range joiners {
			g.Join(ctx, "k")
		}
		g.Finish("k", c, 1)
	}
	flight() // fills the pool
	if n := testing.AllocsPerRun(100, flight); n > 6 {
		t.Errorf("a flight of %d joiners allocates %v objects, want at most 6 (its Call and Done channel, and the race detector's pool drops)", joiners, n)
	}

	// A held flight keeps its waiters for the work that reads them.
	c, _ := g.Join(ctx, "k")
	g.Hold(c)
	g.Join(context.WithValue(ctx, ctxKey{}, 7), "k")
	g.Finish("k", c, 1)
	ctxs := Contexts(WithWaiters(ctx, c.Waiters()))
	if len(ctxs) != 1 || ctxs[0].Value(ctxKey{}) != 7 {
		t.Errorf("Contexts of a held flight after Finish = %v, want the one joiner's", ctxs)
	}
	flight() // reuses pooled waiters, never the held flight's
	if ctxs := Contexts(WithWaiters(ctx, c.Waiters())); len(ctxs) != 1 || ctxs[0].Value(ctxKey{}) != 7 {
		t.Errorf("Contexts of a held flight after later flights = %v, want the one joiner's", ctxs)
	}
}

// TestJoinBytesJoinsWithoutAllocating: JoinBytes finds the flight Join
// started for the same key, and the flight JoinBytes starts is found by
// Join; Key is the key as a string of its own (not the caller's buffer,
// which the caller reuses); joining a flight in the air allocates
// nothing.
func TestJoinBytesJoinsWithoutAllocating(t *testing.T) {
	var g Group[int]
	ctx := context.Background()
	leader, _ := g.Join(ctx, "ca:{1}")
	buf := []byte("ca:{1}")
	if c, led := g.JoinBytes(ctx, buf); led || c != leader {
		t.Fatalf("JoinBytes(ca:{1}) = %p, leader %v; want Join's flight %p, not leader", c, led, leader)
	}
	if n := testing.AllocsPerRun(100, func() { g.JoinBytes(ctx, buf) }); n != 0 {
		t.Errorf("JoinBytes of a flight in the air allocates %v times, want 0", n)
	}
	g.Finish("ca:{1}", leader, 1)

	buf = []byte("ca:{2}")
	c, led := g.JoinBytes(ctx, buf)
	if !led {
		t.Fatal("JoinBytes(ca:{2}) with no flight in the air: not leader")
	}
	copy(buf, "xxxxxx") // the caller reuses its buffer
	if c.Key() != "ca:{2}" {
		t.Errorf("Key() = %q after the caller reused its buffer, want ca:{2}", c.Key())
	}
	if j, led := g.Join(ctx, "ca:{2}"); led || j != c {
		t.Errorf("Join(ca:{2}) = %p, leader %v; want JoinBytes's flight %p", j, led, c)
	}
	g.Finish("ca:{2}", c, 2)
}
