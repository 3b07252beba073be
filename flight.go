package cacheaside

import "sync"

// group coalesces concurrent Gets of one key in one process into one
// flight: one Redis read and, on a miss, one load.
//
// It plays the part of golang.org/x/sync/singleflight, which we do not use
// here for three reasons measured on the hit path: DoChan boxes every value
// in an interface and allocates a channel and a goroutine per caller, its
// goroutines are not owned by anything a Close could wait for, and a panic
// in the function is re-panicked on a fresh goroutine. Here a flight is one
// struct and one channel, results stay typed, the Cache tracks the one
// goroutine that runs it, and panics become errors before they get here.
type group[V any] struct {
	mu sync.Mutex
	m  map[string]*call[V]
}

// call is one flight. done is closed once res is set.
type call[V any] struct {
	done chan struct{}
	res  result[V]
}

// result is what a flight hands to every caller that joined it.
type result[V any] struct {
	val V
	err error
	src source
}

// source says where a result came from.
type source uint8

const (
	fromLoad  source = iota // the loader
	fromRedis               // a Redis hit
	fromLocal               // the in-process cache
)

// join returns the flight for key, starting one if none is in the air. The
// caller that starts it is the leader and must run it and call finish.
func (g *group[V]) join(key string) (c *call[V], leader bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if c := g.m[key]; c != nil {
		return c, false
	}
	if g.m == nil {
		g.m = make(map[string]*call[V])
	}
	c = &call[V]{done: make(chan struct{})}
	g.m[key] = c
	return c, true
}

// finish publishes r to every caller of c. A Get that starts afterwards
// starts a new flight.
func (g *group[V]) finish(key string, c *call[V], r result[V]) {
	c.res = r
	g.forgetCall(key, c)
	close(c.done)
}

// forget detaches the flight of key, if any, from later callers: they start
// a new flight, while callers already waiting keep theirs. Invalidate and
// Set use it so that no Get that starts after them joins an older read.
func (g *group[V]) forget(key string) {
	g.forgetCall(key, nil)
}

func (g *group[V]) forgetCall(key string, c *call[V]) {
	g.mu.Lock()
	if cur := g.m[key]; cur != nil && (c == nil || cur == c) {
		delete(g.m, key)
	}
	g.mu.Unlock()
}
