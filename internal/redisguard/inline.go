package redisguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// Inline calls: with a client that honours context deadlines, a call runs
// on the caller's goroutine under a deadline, no goroutine of its own, as
// long as that deadline cannot cut a call the node is serving (life.go).

// Inline returns key's node and the deadline of a call to it when the
// call may run inline, on the caller's goroutine; else nil and 0 (then
// run it with Do). With a node, DoInline(ctx, n, d, fn) runs it: the pair
// is Do spelled out so that fn does not escape to the heap, for the hit
// path.
func (g *Guard) Inline(key string) (*Node, time.Duration) {
	if !g.inline {
		return nil, 0
	}
	n := g.cbs.forKey(key)
	if d := g.inlineDeadline(n); d > 0 {
		return n, d
	}
	return nil, 0
}

// inlineDeadline returns how long a call to n may run on the caller's
// goroutine, under a context deadline, or 0 when it must be watched
// instead (life.go). It runs inline when the client honours context
// deadlines and either n has not answered yet (the first dial: the limit)
// or this process is not congested and calls are calm (the budget): a
// deadline at the budget would cut calls the node is serving, and a call
// cut while reading closes its connection, so under load each cut adds a
// dial. The timeout clone's socket timeouts cut every call at the budget
// wherever it runs, so its calls always run inline.
func (g *Guard) inlineDeadline(n *Node) time.Duration {
	switch {
	case !g.inline:
		return 0
	case g.clone:
		return g.budget
	case n.cold(): // before calm: a call that ends the cold state notes a slow one first
		return g.limit
	case g.congested(n):
		return 0
	case g.calm(n):
		return g.budget
	}
	return 0
}

// congested reports whether this process holds calls to n up: it is busy,
// or as many calls to n are running as the client has connections to it.
func (g *Guard) congested(n *Node) bool {
	return (g.pool > 0 && n.inflight.Load() >= g.pool) || busy()
}

// calm reports that a call to n may run with a hard deadline at the
// budget, which would cut a call that is slow (life.go): no call was slow
// lately, in this process that is short of CPU or of pooled connections;
// and no call to n that was cut at the budget turned out slow (n answered
// after the cut; if it did not, n froze).
func (g *Guard) calm(n *Node) bool {
	s, c := g.slowAt.Load(), n.lastCut.Load()
	if s == 0 && c == 0 {
		return true
	}
	now, period := clock(), int64(g.calmAfter)
	if s != 0 && now-s < period {
		return false
	}
	return c == 0 || now-c >= period || n.lastReply.Load() <= c
}

// DoInline runs fn, a call to n, on the calling goroutine under a context
// with deadline d, under n's breaker: n and d are what Inline returned (or
// Do found). It is separate from the watched path so that fn does not
// escape: a hit then allocates no closure.
func (g *Guard) DoInline(ctx context.Context, n *Node, d time.Duration, fn func(context.Context) error) error {
	return g.breaker(ctx, n, func() error {
		start := clock()
		rctx, cancel := g.withDeadline(ctx, start, d)
		defer cancel()
		n.inflight.Add(1)
		returned := false
		defer func() {
			if !returned { // a hook ended the goroutine (runtime.Goexit)
				n.inflight.Add(-1)
			}
		}()
		err := g.callSafely(rctx, fn)
		returned = true
		n.inflight.Add(-1)
		now := clock()
		if isReply(err) {
			if now-start > int64(g.budget) {
				g.slowed(now) // before the reply ends a cold state
			}
			n.replied(start, now, int64(g.budget), int64(g.calmAfter))
			return err
		}
		if ctx.Err() == nil && waitedHere(err) && n.lastReply.Load() >= start {
			// Cut before it reached the node, waiting for a pooled
			// connection while the node answered other calls: this
			// process is short of connections, which says nothing about
			// Redis (life.go). Without a reply meanwhile the wait may
			// have been for a dial or a handshake the node never
			// answered (a black hole): judged below like any cut call.
			g.slowed(now)
			return fmt.Errorf("%w: %w", ErrSlow, err)
		}
		if ctx.Err() == nil && IsTimeout(err) && (g.cutWasSlow(n, start, d) || cutUnsent(n, err, now, d)) {
			// Slow, unless the node froze meanwhile: calm tells once the
			// node answers again, or does not.
			note(&n.lastCut, now)
			g.counts.slow.Add(1)
			return fmt.Errorf("%w: %w", ErrSlow, err)
		}
		return err
	})
}

// RetrySlow reports whether a flight whose call ended with err should try
// Redis again rather than load without the fill lock: the call was cut at
// the budget while its node answered (ErrSlow, not past the limit), and
// the guard can wait past the budget for the next call (not the timeout
// clone, whose socket timeouts would cut it again).
func (g *Guard) RetrySlow(err error) bool {
	return !g.clone && errors.Is(err, ErrSlow) && !errors.Is(err, ErrIncomplete)
}

// cutWasSlow reports whether a call to n that began at start and was cut
// by its deadline d was slow rather than failed (life.go): cut at the
// budget while n answered others promptly, or answered others while this
// process held it up, or at the limit (the first dial) while n answered
// others; or cut with a reply of n waiting unread (unread.go: go-redis
// closed the cut connection with its reply in it).
func (g *Guard) cutWasSlow(n *Node, start int64, d time.Duration) bool {
	if d == g.budget {
		// Congestion excuses a cut only while the node answers: a frozen
		// node fills the pool with calls waiting on it, and that must not
		// excuse it (TestFrozenNodeUnderCloneWithFullPoolIsSilent).
		return n.lastPrompt.Load() >= start || (g.congested(n) && n.lastReply.Load() >= start) || n.conns.replyWaiting(start)
	}
	return n.lastReply.Load() >= start || n.conns.replyWaiting(start)
}

// slowed notes a call that was slow.
func (g *Guard) slowed(now int64) {
	note(&g.slowAt, now)
	g.counts.slow.Add(1)
}

// cutUnsent reports whether a call to n that was cut by its deadline d at
// now had not sent its request (unread.go): it ended with the context's
// deadline (which go-redis also returns for a read it cut) or a write cut
// by the socket's deadline, while no request to n (nor a write to it, nor
// the requests of connections closed unanswered since n's latest reply,
// the cut call's own among them) had waited half the deadline unanswered.
// Its goroutine ran too late, which says nothing about n; a frozen node
// that stopped reading leaves a write waiting, and one that did not
// leaves the reads of its requests unanswered.
func cutUnsent(n *Node, err error, now int64, d time.Duration) bool {
	var operr *net.OpError
	if errors.As(err, &operr) {
		if operr.Op != "write" {
			return false
		}
	} else if !errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	return n.conns.watchedAll() && !n.conns.unanswered(now, int64(d)/2)
}
