package redisguard

import (
	"context"
	"fmt"
	"time"
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
func (g *Guard) DoWaiting(ctx context.Context, key string, wait time.Duration, fn func(context.Context) error) error {
	n := g.cbs.forKey(key)
	d := wait + g.limit
	return g.breaker(ctx, n, func() error {
		rctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		if g.inline {
			return g.callSafely(rctx, fn)
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
			return ErrSkipped
		}
		done := make(chan error, 1)
		g.workers.run(rctx, func() {
			err := g.callSafely(rctx, fn)
			<-g.slots
			done <- err
		})
		select {
		case err := <-done:
			return err
		case <-rctx.Done():
			g.counts.abandoned.Add(1)
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("%w: %w", ErrIncomplete, err)
			}
			return fmt.Errorf("%w (%v)", errBudget, d)
		}
	})
}
