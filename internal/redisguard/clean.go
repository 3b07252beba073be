package redisguard

import (
	"sync/atomic"

	"github.com/sony/gobreaker/v2"
)

// A breaker's Execute takes its mutex twice and reads the time twice per
// call: on a lone hit that is about a point of the Get's time in all
// (bench_lone_test.go). While a node's breaker is closed and has counted
// no failure since its last success, a call that succeeds (or is excluded)
// changes nothing the breaker decides by: it trips on consecutive
// failures only, and counts in no interval. So such a node is clean, and
// its calls run without Execute; a failure is then counted by an Execute
// of its own, after the call, once the node is marked dirty. Calls on a
// dirty node go through Execute as before, and the first success there
// that finds the breaker closed with no failure counted makes the node
// clean again.

// cleanState is a node's clean flag (bit 0) and its dirt epoch (the other
// bits, raised by every failure): a node is made clean only if no failure
// came between the look at its breaker and the flag's store.
type cleanState struct{ w atomic.Uint64 }

// clean reports whether calls to the node may skip its breaker's Execute.
func (c *cleanState) clean() bool { return c.w.Load()&1 == 1 }

// dirty clears the flag and raises the epoch, before a failure is counted.
func (c *cleanState) dirty() {
	for {
		o := c.w.Load()
		if c.w.CompareAndSwap(o, (o|1)+1) { // bit 0 cleared, epoch + 1
			return
		}
	}
}

// settle marks the node clean after a success on the slow path, if cb is
// closed with no consecutive failure and no failure was noted meanwhile.
// A failure is noted (dirty) both before it is counted, so that no call
// skips Execute while it is, and after, so that a settle that looked at
// the counts before it was counted is undone.
func (c *cleanState) settle(cb *gobreaker.CircuitBreaker[struct{}]) {
	o := c.w.Load()
	if o&1 == 1 {
		return
	}
	if cb.State() != gobreaker.StateClosed || cb.Counts().ConsecutiveFailures != 0 {
		return
	}
	c.w.CompareAndSwap(o, o|1)
}

// failed counts err, the failure of a call that ran past cb's Execute, as
// Execute would have: only while cb is still closed (a failure that began
// before a trip must not reopen a half-open breaker).
func (c *cleanState) failed(cb *gobreaker.CircuitBreaker[struct{}], err error) {
	c.dirty()
	if cb.State() == gobreaker.StateClosed {
		_, _ = cb.Execute(func() (struct{}, error) { return struct{}{}, err })
	}
	c.dirty()
}
