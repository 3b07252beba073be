package cacheaside

import (
	"context"
	"sync"
)

// group coalesces concurrent Gets of one key in one process into one
// flight: one Redis read and, on a miss, one load.
//
// It plays the part of golang.org/x/sync/singleflight, which we do not use
// here because the hit path is measured against a plain GET: DoChan boxes
// every value in an interface and allocates a channel and a goroutine per
// call, and its goroutines are not owned by anything Close could wait for.
// Here the leader of a flight reads Redis on its own goroutine, a channel is
// made only when a second caller has to wait, and a flight nobody else saw
// is recycled, so an uncontended hit allocates nothing for coalescing.
type group[V any] struct {
	mu    sync.Mutex
	m     map[string]*call[V]
	pool  sync.Pool
	track bool // WithWaiterContexts: flights record their waiters
}

// call is one flight. Its fields are guarded by the group's mutex.
type call[V any] struct {
	// done is made under the mutex by join (for a joiner) or hold (for a
	// leader that will wait) before the caller can read it, and closed by
	// finish after res is set: reading res after <-done needs no lock.
	done    chan struct{}
	shared  bool // another caller holds a pointer: never recycle
	res     result[V]
	waiters *waiters // with WithWaiterContexts: made by the first joiner or hold
}

// result is what a flight hands to every caller that joined it.
type result[V any] struct {
	val   V
	err   error
	src   source
	stale bool // served past its logical expiry (WithStaleIfError)
}

// source says where a result came from.
type source uint8

const (
	fromLoad  source = iota // the loader
	fromRedis               // a Redis hit
	fromLocal               // the in-process cache
)

// join returns the flight for key, starting one if none is in the air. The
// caller that starts it is the leader and must see that finish is called.
// ctx is the caller's, remembered as a waiter's when it joins a flight and
// the group tracks them.
func (g *group[V]) join(ctx context.Context, key string) (c *call[V], leader bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.m[key]; c != nil {
		c.shared = true
		if c.done == nil {
			c.done = make(chan struct{})
		}
		if g.track {
			if c.waiters == nil {
				c.waiters = &waiters{}
			}
			c.waiters.add(ctx)
		}
		return c, false
	}
	if g.m == nil {
		g.m = make(map[string]*call[V])
	}
	c, _ = g.pool.Get().(*call[V])
	if c == nil {
		c = new(call[V])
	}
	g.m[key] = c
	return c, true
}

// hold marks c as seen by a caller that will wait for it later, so that
// finish does not recycle it, and makes its done channel. A leader calls it
// before handing its flight to a goroutine.
func (g *group[V]) hold(c *call[V]) {
	g.mu.Lock()
	c.shared = true
	if c.done == nil {
		c.done = make(chan struct{})
	}
	if g.track && c.waiters == nil {
		c.waiters = &waiters{} // callers that join later add themselves
	}
	g.mu.Unlock()
}

// finish publishes r to every caller of c. A Get that starts afterwards
// starts a new flight. A flight that no other caller ever saw is recycled.
func (g *group[V]) finish(key string, c *call[V], r result[V]) {
	g.mu.Lock()
	c.res = r
	if g.m[key] == c {
		delete(g.m, key)
	}
	done, shared := c.done, c.shared
	g.mu.Unlock()
	if done != nil {
		close(done)
	}
	if !shared {
		*c = call[V]{}
		g.pool.Put(c)
	}
}

// forget detaches the flight of key, if any, from later callers: they start
// a new flight, while callers already waiting keep theirs. Invalidate and
// Set use it so that no Get that starts after them joins an older read.
func (g *group[V]) forget(key string) {
	g.mu.Lock()
	delete(g.m, key)
	g.mu.Unlock()
}
