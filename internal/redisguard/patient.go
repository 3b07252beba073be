package redisguard

import (
	"context"
	"time"
)

// Patient calls: the writes of a cache (a Set's or an Invalidate's script,
// the clock script of Clear and InvalidateTag, the PUBLISH of an L1
// message, and their replays) on a node that answers, only slowly. A
// call that runs inline is cut at the budget (inline.go); when the node
// answered others meanwhile it fails with ErrSlow, which is overload, not
// an outage: a textbook cache's SET or DEL would have succeeded a little
// later. So a write cut that way is sent again, until the limit since the
// first try, as a Get's lock acquire is (RetrySlow). The next try usually
// runs watched, since the cut makes calls to the node not calm, and is
// waited for while the node answers. A call judged silent, refused,
// skipped, or past the limit is not retried: a frozen or dead Redis fails
// a write within the same bounds as before. The same writes with a WAIT
// for replicas (DoWaitingPatient) are not cut at the budget at all
// (DoWaiting); they are retried when a pooled connection was not free in
// time while the node answered others.
//
// Only idempotent calls may be patient: the first try may still have run
// on the server.

// slowRetryMin and slowRetryMax bound the pause between tries of a
// patient call.
const (
	slowRetryMin = 5 * time.Millisecond
	slowRetryMax = 50 * time.Millisecond
)

// DoPatient is Do for an idempotent write: a try cut at the budget while
// key's node answered others (RetrySlow) is tried again, after a short
// pause, until the guard's limit since the first try or until ctx ends.
// fn must be safe to run more than once, and must leave nothing that a
// later try depends on.
func (g *Guard) DoPatient(ctx context.Context, key string, fn func(context.Context) error) error {
	return g.patiently(ctx, func() error { return g.Do(ctx, key, fn) })
}

// PerNodePatient is PerNode without undo for an idempotent write: each
// node's call is retried as DoPatient retries it.
func (g *Guard) PerNodePatient(ctx context.Context, keys []string, idx []int, fn func(ctx context.Context, idx []int) error) (errOf []error, joined error) {
	return g.perNode(keys, idx, func(idx []int) error {
		return g.patiently(ctx, func() error {
			return g.Do(ctx, keys[idx[0]], func(ctx context.Context) error { return fn(ctx, idx) })
		})
	})
}

// DoWaitingPatient is DoWaiting for an idempotent write that the server
// may hold on purpose (scripts and their WAIT for replicas): a try that
// RetrySlow holds for (it waited for a pooled connection, or was cut on
// the caller's goroutine, while key's node answered others) is tried
// again as DoPatient's are, until the limit since the first try. A call
// DoWaiting abandoned, skipped or judged failed is not: a frozen or dead
// Redis fails it within the same bounds as DoWaiting. fn must be safe to
// run more than once, and must leave nothing that a later try depends on.
func (g *Guard) DoWaitingPatient(ctx context.Context, key string, wait time.Duration, fn func(context.Context) error) error {
	return g.patiently(ctx, func() error { return g.DoWaiting(ctx, key, wait, fn) })
}

// patiently runs try, and again while it fails with an error RetrySlow
// holds for, until the limit since the first try or until ctx ends; it
// returns the last try's error. The limit bounds when a new try may
// start, not when the last one ends: a try started just before it runs
// to its own deadline, so a call on a slow node that keeps answering
// others may take up to about twice the limit (plus the WAIT timeout for
// DoWaitingPatient). A frozen node's calls are never retried.
//
// A try is sent only once the one before it ended: RetrySlow never holds
// for an error that wraps ErrIncomplete, which is the error of every try
// the guard stopped waiting for (besides, one abandoned while its node
// answered is abandoned at the limit, when no new try may start). So the
// tries of a patient call never run at once, and a patient call may write
// its caller's variables plainly: when it succeeds they hold what its
// last try wrote, and nothing writes them after it returned. When it
// fails with ErrIncomplete the last try may still be running, as for Do.
func (g *Guard) patiently(ctx context.Context, try func() error) error {
	first := time.Now()
	pause := slowRetryMin
	for {
		err := try()
		if !g.RetrySlow(err) {
			return err
		}
		left := g.limit - time.Since(first)
		if left <= 0 || ctx.Err() != nil {
			return err
		}
		t := time.NewTimer(min(pause, left))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
		pause = min(2*pause, slowRetryMax)
	}
}
