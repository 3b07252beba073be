package redisguard

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// An inline call runs under a deadline at the budget. With
// ContextTimeoutEnabled, go-redis reads only ctx.Deadline() for its socket
// reads and writes; it waits on ctx.Done() only where a call waits inside
// this process, for a pooled connection or a dial. context.WithTimeout
// gives every call a timer, a channel and a cancel context of its own:
// five allocations on a hit that makes about twenty-five. A budgetCtx is
// one: it reports the call's deadline exactly, so a socket read is cut at
// the budget as before, and its Done channel is shared by every call
// whose deadline falls in the same tick (a sixteenth of the budget),
// closed at the end of that tick: a wait for a connection ends at most a
// tick after the deadline. The caller's own cancellation is seen then
// too, not earlier: an inline call is bounded by its deadline, not by its
// caller (a socket read never was: go-redis does not watch ctx.Done()
// while it reads or writes).

// ticksPerBudget is how many ticks a budget spans: a budgetCtx's Done
// closes at most budget/ticksPerBudget after its deadline.
const ticksPerBudget = 16

// budgetCtx is the context of an inline call: its parent's values, a
// deadline, and a Done channel that closes at the end of the deadline's
// tick. Err is nil until Done closes, then the parent's error if it has
// one, else context.DeadlineExceeded.
type budgetCtx struct {
	context.Context
	deadline time.Time
	done     <-chan struct{}
}

func (c *budgetCtx) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *budgetCtx) Done() <-chan struct{}       { return c.done }

func (c *budgetCtx) Err() error {
	select {
	case <-c.done:
	default:
		return nil
	}
	if err := c.Context.Err(); err != nil {
		return err
	}
	return context.DeadlineExceeded
}

// ticks hands out the shared Done channels of budgetCtx: one per tick in
// which a deadline falls, closed by a timer at the tick's end. Deadlines
// are now+budget, so ticks are asked for in nearly increasing order: the
// latest one serves almost every call with one atomic load.
type ticks struct {
	width  int64 // nanoseconds of clock per tick
	latest atomic.Pointer[tick]

	mu      sync.Mutex
	pending []*tick // ticks whose timers have not fired: stopped by stop
	stopped bool
}

// tick is the channel closed at clock end (a tick index times width).
type tick struct {
	end   int64
	ch    chan struct{}
	timer *time.Timer
}

// newTicks returns the ticks of a guard whose budget is budget.
func newTicks(budget time.Duration) *ticks {
	return &ticks{width: max(int64(budget)/ticksPerBudget, 1)}
}

// done returns a channel closed at the end of the tick in which the clock
// instant at falls, or later (at most a tick later, for a caller whose
// clock read lagged another's). ok is false after stop: the caller then
// needs a context of its own.
func (t *ticks) done(at int64) (ch <-chan struct{}, ok bool) {
	end := (at/t.width + 1) * t.width
	if l := t.latest.Load(); l != nil && l.end >= end && l.end-end <= t.width {
		return l.ch, true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return nil, false
	}
	if l := t.latest.Load(); l != nil && l.end >= end && l.end-end <= t.width {
		return l.ch, true
	}
	k := &tick{end: end, ch: make(chan struct{})}
	k.timer = time.AfterFunc(time.Duration(end-clock()), func() { t.fire(k) })
	t.pending = append(t.pending, k)
	if l := t.latest.Load(); l == nil || l.end < end {
		t.latest.Store(k)
	}
	return k.ch, true
}

// fire closes k's channel at its end and forgets it.
func (t *ticks) fire(k *tick) {
	t.mu.Lock()
	defer t.mu.Unlock()
	close(k.ch)
	for i, p := range t.pending {
		if p == k {
			t.pending = append(t.pending[:i], t.pending[i+1:]...)
			break
		}
	}
}

// stop stops the timers of the ticks that have not ended, so that none
// runs after the guard closed. A call that still waits on one waits on
// its own deadline's socket timeout or its pool's timeout instead.
func (t *ticks) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.stopped = true
	for _, k := range t.pending {
		if k.timer.Stop() {
			close(k.ch) // ended early: nobody waits past Close
		}
	}
	t.pending = nil
	t.latest.Store(nil)
}

// withDeadline returns a context for an inline call under ctx that began
// at clock start and ends after d, and its cancel function. It is a
// budgetCtx when d is the budget (the ticks then come in order), ctx has
// no earlier deadline and the guard is open; otherwise
// context.WithDeadline's. The deadline is found from start, not from a
// clock read of its own: the call's start is its clock reading.
func (g *Guard) withDeadline(ctx context.Context, start int64, d time.Duration) (context.Context, context.CancelFunc) {
	deadline := instant(start + int64(d))
	if pd, ok := ctx.Deadline(); d == g.budget && (!ok || pd.After(deadline)) {
		if ch, ok := g.ticks.done(start + int64(d)); ok {
			return &budgetCtx{Context: ctx, deadline: deadline, done: ch}, noCancel
		}
	}
	return context.WithDeadline(ctx, deadline)
}

// noCancel is the cancel function of a budgetCtx: it holds no resources.
func noCancel() {}
