package redisguard

import (
	"errors"
	"sync/atomic"

	"github.com/sony/gobreaker/v2"
)

// A breaker's Execute takes its mutex twice and reads the time twice per
// call: on a lone hit that is about a point of the Get's time in all
// (bench_lone_test.go). While a node's breaker is closed and has counted
// no failure since its last success, a call that succeeds (or is excluded)
// changes nothing the breaker decides by: it trips on consecutive
// failures only, and counts in no interval. So such a node is clean, and
// its calls run without Execute. A failure is then counted by an Execute
// of its own, after the call, with the node marked dirty while it is; so
// is a success that ends after a failure began, since it resets that
// failure's count. Either is counted only if the breaker has not changed
// state since the call began: gobreaker too ignores a call of an earlier
// generation, so that a call begun before a trip neither reopens a breaker
// that closed again nor closes a half-open one. Calls on a dirty node go
// through Execute as before, and the first success there that finds the
// breaker closed with no failure counted makes the node clean again.

// cleanState is a node's clean flag, its failures being counted, and the
// breaker's state changes. Bit 0 of w is the flag, bits 1-20 count the
// failures being counted, and the bits above are an epoch raised by every
// failure as it begins: a node is made clean only if no failure was being
// counted when its breaker was looked at, and none began before the
// flag's store. While the flag is set, then, the breaker is closed with no
// consecutive failure.
type cleanState struct {
	w    atomic.Uint64
	gens atomic.Uint64 // the breaker's state changes (OnStateChange)
}

const (
	cleanFlag   = 1
	countingOne = 1 << 1
	countingAll = (1<<20 - 1) << 1
	epochOne    = 1 << 21
)

// enter returns what a call to the node must know when it ends: the
// breaker's generation and the state word as it begins, and whether the
// node is clean (then the call may skip Execute). The generation is read
// first, so that it is never newer than the generation the call began in.
func (c *cleanState) enter() (gen, w uint64, clean bool) {
	gen = c.gens.Load()
	w = c.w.Load()
	return gen, w, w&cleanFlag != 0
}

// changed notes a state change of the breaker; it runs under its lock.
func (c *cleanState) changed() { c.gens.Add(1) }

// begin clears the flag and raises the epoch as a failure is about to be
// counted; end follows once it is.
func (c *cleanState) begin() {
	for {
		o := c.w.Load()
		if c.w.CompareAndSwap(o, (o&^cleanFlag)+countingOne+epochOne) {
			return
		}
	}
}

// end notes that a failure begun with begin has been counted (or not).
func (c *cleanState) end() { c.w.Add(^uint64(countingOne - 1)) }

// settle marks the node clean after a success on the slow path, if cb is
// closed with no consecutive failure, no failure was being counted, and
// none began meanwhile.
func (c *cleanState) settle(cb *gobreaker.CircuitBreaker[struct{}]) {
	o := c.w.Load()
	if o&(cleanFlag|countingAll) != 0 {
		return
	}
	if cb.State() != gobreaker.StateClosed || cb.Counts().ConsecutiveFailures != 0 {
		return
	}
	c.w.CompareAndSwap(o, o|cleanFlag)
}

// succeeded counts the answer (or error reply) of a call that ran past
// cb's Execute on the clean node it found with enter, if a failure began
// since (then the answer resets its count). Otherwise the breaker is
// still closed with no consecutive failure, and counting it would change
// nothing.
func (c *cleanState) succeeded(cb *gobreaker.CircuitBreaker[struct{}], gen, w uint64, err error) {
	if c.w.Load() != w {
		c.count(cb, gen, err)
	}
}

// failed counts err, the failure of a call that ran past cb's Execute (it
// began in generation gen), as Execute would have.
func (c *cleanState) failed(cb *gobreaker.CircuitBreaker[struct{}], gen uint64, err error) {
	c.begin()
	c.count(cb, gen, err)
	c.end()
}

// failedNow counts err, a failure of no call of its own (Guard.Failed),
// while cb is closed: it must not reopen a half-open breaker.
func (c *cleanState) failedNow(cb *gobreaker.CircuitBreaker[struct{}], err error) {
	gen := c.gens.Load()
	if cb.State() == gobreaker.StateClosed {
		c.failed(cb, gen, err)
	}
}

// errEarlier is the outcome that count gives gobreaker for a call of an
// earlier generation: excluded, as a call whose caller left is.
var errEarlier = callerGone{errors.New("cacheaside: call of an earlier breaker generation")}

// count counts err through an Execute of its own if cb is still in
// generation gen; a state change that comes between excludes it.
func (c *cleanState) count(cb *gobreaker.CircuitBreaker[struct{}], gen uint64, err error) {
	if c.gens.Load() != gen {
		return
	}
	_, _ = cb.Execute(func() (struct{}, error) {
		if c.gens.Load() != gen {
			return struct{}{}, errEarlier
		}
		return struct{}{}, err
	})
}
