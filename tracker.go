package cacheaside

import "sync"

// tracker counts goroutines for Close. It is the Cache's mutex and
// WaitGroup, shared with flights.
type tracker struct {
	mu     sync.RWMutex
	closed bool
	wg     sync.WaitGroup
}

// add registers one goroutine, unless Close has begun.
func (t *tracker) add() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

// spawn registers one goroutine started by work that is itself
// registered (an entry point between add and done, or a tracked
// goroutine). The count is then above zero, so it is safe even while Close
// waits, and Close waits for this goroutine too.
func (t *tracker) spawn() { t.wg.Add(1) }

func (t *tracker) done() { t.wg.Done() }

// close marks the tracker closed and reports whether it was open.
func (t *tracker) close() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.closed = true
	return true
}
