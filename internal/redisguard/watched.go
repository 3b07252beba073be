package redisguard

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// watched runs fn on a goroutine of its own and waits for it as life.go
// describes: past the budget only while n answers other calls (or has not
// answered yet), up to the limit. It is the way to bound a call on a
// client that ignores context deadlines on socket reads, and the way to
// wait past the budget on one that honours them. At most MaxAbandoned such
// calls run at once; a call that finds no free slot is not sent, once the
// node is judged silent (or the limit passes). onLate, if not nil, runs on
// the call's goroutine when a call that was abandoned completes after all,
// to undo what it did (a fill lock it took).
func (g *Guard) watched(ctx context.Context, n *Node, fn func(context.Context) error, onLate func()) error {
	wake := n.woken() // before start: a dial refused after start closes it
	w := watch{l: &n.life, start: clock(), cold: n.cold(), budget: int64(g.budget), limit: int64(g.limit), period: int64(g.calmAfter),
		congested: func() bool { return g.congested(n) }, starved: busy, cs: n.conns}
	rctx, cancel := context.WithTimeout(ctx, g.limit)
	defer cancel()
	t := newTimer(g.budget)
	defer putTimer(t)
	due, wasSlow := w.start+w.budget, false
	// check judges the call at a tick of t and, unless it gives up, sets
	// the next tick a budget later.
	check := func() verdict {
		now := clock()
		v := w.judge(due, now)
		switch v {
		case slow:
			note(&g.slowAt, now)
			if !wasSlow {
				wasSlow = true
				g.counts.slow.Add(1)
			}
		case silent, overdue:
			return v
		}
		due = now + w.budget
		t.Reset(g.budget)
		return v
	}

	select {
	case g.slots <- struct{}{}:
	default:
		for sent := false; !sent; {
			select {
			case g.slots <- struct{}{}:
				sent = true
			case <-ctx.Done():
				g.counts.skipped.Add(1)
				return ErrSkipped
			case <-t.C:
				switch check() {
				case silent:
					g.counts.skipped.Add(1)
					return ErrSkipped
				case overdue:
					g.counts.skipped.Add(1)
					return errSkippedSlow
				}
			}
		}
	}
	// state: 0 running, 1 finished in time, 2 abandoned. Whoever moves it
	// first decides who accounts for an abandoned call.
	var state atomic.Int32
	done := make(chan error, 1)
	start, budget, period := w.start, w.budget, w.period
	n.inflight.Add(1)
	g.workers.run(rctx, func() {
		returned := false
		defer func() {
			if returned {
				return
			}
			// A hook ended this goroutine (runtime.Goexit): give back the
			// slot and the count, and answer, as a return would.
			n.inflight.Add(-1)
			<-g.slots
			done <- errCallExited
			if !state.CompareAndSwap(0, 1) && onLate != nil {
				onLate()
			}
		}()
		err := g.callSafely(rctx, fn)
		returned = true
		n.inflight.Add(-1)
		if isReply(err) {
			now := clock()
			if now-start > budget {
				note(&g.slowAt, now) // before the reply ends a cold state
			}
			n.replied(start, now, budget, period)
		}
		<-g.slots
		done <- err
		if !state.CompareAndSwap(0, 1) {
			if onLate != nil {
				onLate()
			}
		}
	})
	for {
		var why error
		select {
		case <-wake:
			if !n.refusedSince(w.start) {
				wake = n.woken()
				continue
			}
			why = errRefused // the call goes on, retrying a dial in vain
		case err := <-done:
			if ctx.Err() == nil && waitedHere(err) && n.lastReply.Load() >= start {
				// Nothing was sent: it waited for a pooled connection
				// until the pool's timeout or the limit while the node
				// answered other calls. Without a reply meanwhile the
				// wait may have been for a dial or a handshake a silent
				// node never answered: a failure like any other.
				if !wasSlow {
					g.counts.slow.Add(1)
				}
				return fmt.Errorf("%w: %w", ErrSlow, err)
			}
			if !wasSlow && clock()-w.start > w.budget {
				g.counts.slow.Add(1) // waited for past the budget
			}
			return err
		case <-ctx.Done():
		case <-t.C:
			switch check() {
			case silent:
				why = fmt.Errorf("%w (%v)", errBudget, g.budget)
			case overdue:
				why = errOverdue
			default:
				continue
			}
		}
		// The node is silent, the limit passed, or the caller left. The
		// call goes on until the client's own timeouts end it.
		if !state.CompareAndSwap(0, 2) {
			return <-done
		}
		g.counts.abandoned.Add(1)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: %w", ErrIncomplete, err)
		}
		return why
	}
}

// timers recycles the watched path's timers: a call that ends within the
// budget, nearly all of them, never fires its timer.
var timers sync.Pool

// newTimer returns a timer that fires after d.
func newTimer(d time.Duration) *time.Timer {
	if t, ok := timers.Get().(*time.Timer); ok {
		t.Reset(d)
		return t
	}
	return time.NewTimer(d)
}

// putTimer stops t and keeps it for newTimer. Since Go 1.23 a stopped
// timer's channel holds no stale value, so Reset is safe after Stop.
func putTimer(t *time.Timer) {
	t.Stop()
	timers.Put(t)
}
