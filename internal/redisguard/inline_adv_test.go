package redisguard

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestInlineCallCutBeforeItsRequestIsNotAFailure: the inline path has no
// counterpart of judge's "no request waited a window: this call's may not
// be sent yet" (unread.go). An inline call whose goroutine does not run
// until its deadline has passed (here a sleep stands for a process the OS
// does not schedule: with two `yes > /dev/null` beside
// TestUnreadRepliesAreNotSilence-like loops on a 2-core machine, 2 to 7
// of 20 inline PINGs to a live server failed with "write tcp ...: i/o
// timeout" or "context deadline exceeded") has its write cut by the
// deadline: nothing reaches the node, yet cutWasSlow counts the call as a
// Redis failure, and the breaker of a healthy node opens. The same call
// on the watched path (inline=false) is judged "waiting" and succeeds.
func TestInlineCallCutBeforeItsRequestIsNotAFailure(t *testing.T) {
	for _, inline := range []bool{false, true} {
		t.Run(fmt.Sprintf("inline=%v", inline), func(t *testing.T) {
			srv := redistest.Start(t)
			rdb, g := starvedGuard(t, srv, inline, 1)
			ctx := context.Background()
			time.Sleep(50 * time.Millisecond)
			err := g.Do(ctx, "k", func(ctx context.Context) error {
				time.Sleep(45 * time.Millisecond) // descheduled past the 40ms budget before the request is written
				return rdb.Ping(ctx).Err()
			})
			if IsOutage(err) || g.State() == Open {
				t.Errorf("a call to a live node whose request was not sent by its deadline: %v (IsOutage %v), breaker %v; want no failure (Counts() = %+v)",
					err, IsOutage(err), g.State(), g.Counts())
			}
		})
	}
}
