package redisguard

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// DoWaiting runs fn, a Redis call for key that the server itself may hold
// for up to wait (WAIT for replicas), under key's node's breaker, for at
// most wait plus the limit (the longest Do waits for a node that answers
// slowly). It is not judged by the budget, as Do's calls are: a call that
// blocks on the server by design would read as a silent node. On a client that honours context deadlines fn runs on the
// calling goroutine under that deadline; on one that does not, it runs on
// a goroutine of its own (one of the abandoned-call slots) that the
// caller stops waiting for at the deadline, as Do's calls do at the
// budget; when every slot is taken it waits for one, within the same
// deadline. A nil error from fn is success; the breaker counts only fn's
// errors, so fn reports a reply it does not like some other way.
//
// A call cut while its node answered other calls since it began is slow,
// not failed, as with Do: its error wraps ErrSlow and it counts neither
// for nor against the breaker. One that waited for a pooled connection
// until the client's PoolTimeout is one RetrySlow holds for
// (DoWaitingPatient); one cut at the deadline, or not given a slot by
// then, is past the limit and wraps ErrIncomplete too, as Do's are.
func (g *Guard) DoWaiting(ctx context.Context, key string, wait time.Duration, fn func(context.Context) error) error {
	n := g.cbs.forKey(key)
	d := wait + g.limit
	return g.breaker(ctx, n, func() error {
		start := clock()
		rctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		if g.inline {
			return g.waited(ctx, n, start, g.callSafely(rctx, fn))
		}
		// A burst of such calls (synchronous invalidations, replica
		// acks) waits its turn for a slot, as Do's calls do, instead of
		// failing calls the server would have answered.
		select {
		case g.slots <- struct{}{}:
		case <-rctx.Done():
			g.counts.skipped.Add(1)
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("%w: %w", ErrIncomplete, err)
			}
			if n.lastReply.Load() >= start {
				return errSkippedSlow
			}
			return ErrSkipped
		}
		done := make(chan error, 1)
		g.workers.run(rctx, func() {
			err := g.callSafely(rctx, fn)
			if isReply(err) {
				note(n.lastReply, clock())
			}
			<-g.slots
			done <- err
		})
		select {
		case err := <-done:
			return g.waited(ctx, n, start, err)
		case <-rctx.Done():
			g.counts.abandoned.Add(1)
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("%w: %w", ErrIncomplete, err)
			}
			if n.lastReply.Load() >= start {
				g.counts.slow.Add(1)
				return fmt.Errorf("%w (%v)", errOverdue, d)
			}
			return fmt.Errorf("%w (%v)", errBudget, d)
		}
	})
}

// waited is the error of a DoWaiting call to n that began at start and
// ended with err. A reply is noted as the node's sign of life (not as a
// prompt one: the server held it on purpose). While n answered other
// calls and the caller is still there, a call that waited for a pooled
// connection until the client's PoolTimeout is slow (ErrSlow: sent again
// by DoWaitingPatient), and one cut at its deadline, waiting or reading,
// is slow past the limit (errOverdue: not sent again).
func (g *Guard) waited(ctx context.Context, n *Node, start int64, err error) error {
	if isReply(err) {
		note(n.lastReply, clock())
		return err
	}
	if ctx.Err() != nil || n.lastReply.Load() < start {
		return err
	}
	switch {
	case errors.Is(err, redis.ErrPoolTimeout):
		g.counts.slow.Add(1)
		return fmt.Errorf("%w: %w", ErrSlow, err)
	case IsTimeout(err):
		g.counts.slow.Add(1)
		return fmt.Errorf("%w: %w", errOverdue, err)
	}
	return err
}
