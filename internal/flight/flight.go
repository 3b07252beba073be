// Package flight coalesces concurrent requests for one key in one process
// into one flight: the first caller (the leader) does the work, every
// caller that joins while it runs waits for the same result.
//
// It plays the part of golang.org/x/sync/singleflight, which cacheaside
// does not use on its hit path, measured against a plain Redis GET:
// DoChan boxes every value in an interface and allocates a channel and a
// goroutine per call, and its goroutines are not owned by anything a
// Close could wait for. Here the leader runs the work on a goroutine of
// its choosing (its own for a Redis hit), a channel is made only when a
// second caller has to wait, and a flight nobody else saw is recycled, so
// an uncontended request allocates nothing for coalescing.
package flight

import (
	"context"
	"sync"
)

// Group holds the flights in the air, by key. The zero value is ready to
// use. R is the result every caller of a flight receives.
type Group[R any] struct {
	mu   sync.Mutex
	m    map[string]*Call[R]
	pool sync.Pool
	// waiters recycles the Waiters of flights nobody held (see Finish), so
	// that a hot key's flights do not grow a new list of joiners each.
	waiters sync.Pool
	// Track makes flights record the contexts of the callers that join
	// them (see Waiters). Set it before the first Join.
	Track bool
}

// Call is one flight. Its fields are guarded by the group's mutex.
type Call[R any] struct {
	key string // the flight's key, set before the flight is published
	// done is made under the mutex by Join (for a joiner) or Hold (for a
	// leader that will wait) before the caller can read it, and closed by
	// Finish after res is set: reading res after <-done needs no lock.
	done    chan struct{}
	shared  bool // another caller holds a pointer: never recycle
	held    bool // Hold was called: its work may read waiters
	joins   int  // callers that joined the flight in the air
	res     R
	waiters *Waiters // with Track: made by the first joiner or Hold
}

// Done is closed when the flight's result is ready. Only callers that
// joined the flight, or a leader that called Hold, may wait on it.
func (c *Call[R]) Done() <-chan struct{} { return c.done }

// Key returns the key the flight was started for.
func (c *Call[R]) Key() string { return c.key }

// Result returns the flight's result; call it only after Done is closed.
func (c *Call[R]) Result() R { return c.res }

// Waiters returns the contexts of the callers that joined the flight, or
// nil when the group does not track them or nobody joined. Only the
// leader of a flight it held (Hold) may call it: the waiters of a flight
// nobody held are recycled when it finishes.
func (c *Call[R]) Waiters() *Waiters { return c.waiters }

// Join returns the flight for key, starting one if none is in the air. The
// caller that starts it is the leader and must see that Finish is called.
// ctx is the caller's, remembered as a waiter's when it joins a flight and
// the group tracks them.
func (g *Group[R]) Join(ctx context.Context, key string) (c *Call[R], leader bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.m[key]; c != nil {
		g.joinLocked(ctx, c)
		return c, false
	}
	return g.startLocked(key), true
}

// JoinBytes is Join for a key the caller holds as bytes, typically in a
// buffer on its stack: only a leader makes it a string (Call.Key), so
// joining a flight in the air allocates nothing for the key.
func (g *Group[R]) JoinBytes(ctx context.Context, key []byte) (c *Call[R], leader bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.m[string(key)]; c != nil { // the lookup does not copy key
		g.joinLocked(ctx, c)
		return c, false
	}
	return g.startLocked(string(key)), true
}

// joinLocked adds a caller to c, a flight in the air.
func (g *Group[R]) joinLocked(ctx context.Context, c *Call[R]) {
	c.shared = true
	c.joins++
	if c.done == nil {
		c.done = make(chan struct{})
	}
	if g.Track {
		if c.waiters == nil {
			c.waiters = g.newWaiters()
		}
		c.waiters.add(ctx)
	}
}

// newWaiters returns an empty Waiters, recycled when it can be.
func (g *Group[R]) newWaiters() *Waiters {
	if w, _ := g.waiters.Get().(*Waiters); w != nil {
		return w
	}
	return &Waiters{}
}

// startLocked starts the flight of key.
func (g *Group[R]) startLocked(key string) *Call[R] {
	if g.m == nil {
		g.m = make(map[string]*Call[R])
	}
	c, _ := g.pool.Get().(*Call[R])
	if c == nil {
		c = new(Call[R])
	}
	c.key = key
	g.m[key] = c
	return c
}

// Hold marks c as seen by a caller that will wait for it later, so that
// Finish does not recycle it, and makes its Done channel. A leader calls
// it before handing its flight to a goroutine.
func (g *Group[R]) Hold(c *Call[R]) {
	g.mu.Lock()
	c.shared, c.held = true, true
	if c.done == nil {
		c.done = make(chan struct{})
	}
	if g.Track && c.waiters == nil {
		c.waiters = g.newWaiters() // callers that join later add themselves
	}
	g.mu.Unlock()
}

// Finish publishes r to every caller of c. A Join that comes afterwards
// starts a new flight. A flight that no other caller ever saw is recycled:
// the leader must not touch c after Finish unless it called Hold. So are
// the waiters of a flight nobody held, which nothing reads once it is
// out of the map (Waiters).
func (g *Group[R]) Finish(key string, c *Call[R], r R) {
	g.mu.Lock()
	c.res = r
	if g.m[key] == c {
		delete(g.m, key)
	}
	done, shared := c.done, c.shared
	var w *Waiters
	if !c.held {
		w, c.waiters = c.waiters, nil
	}
	g.mu.Unlock()
	if done != nil {
		close(done)
	}
	if w != nil {
		w.reset()
		g.waiters.Put(w)
	}
	if !shared {
		*c = Call[R]{}
		g.pool.Put(c)
	}
}

// ForgetAll is Forget for every key: a Clear uses it.
func (g *Group[R]) ForgetAll() {
	g.mu.Lock()
	clear(g.m)
	g.mu.Unlock()
}

// Forget detaches the flight of key, if any, from later callers: they
// start a new flight, while callers already waiting keep theirs. An
// invalidation uses it so that no request that starts after it joins an
// older read.
func (g *Group[R]) Forget(key string) {
	g.mu.Lock()
	delete(g.m, key)
	g.mu.Unlock()
}
