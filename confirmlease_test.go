package cacheaside_test

import (
	"errors"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// WithSyncInvalidation when a subscription Redis has closed has not been
// noticed by its process yet: the publisher waits on the registry of live
// subscribers, not on PUBLISH's count, and the process stops trusting
// its L1 before its lease in that registry ends.

// TestSyncInvalidationUnnoticedDrop: B's subscription is killed by Redis
// (CLIENT KILL TYPE pubsub) while B's reader is stalled, so B has not
// read the close; then, after a delay that varies, A invalidates k
// synchronously. A waits for B, which never confirms, until B's lease in
// the registry ends (B stopped trusting its L1 before that), and
// returns nil; each time A's call returns nil, B serves the new value.
// On the PUBLISH count alone, A returned nil at once and B served its old
// copy (8 of 8 rounds).
func TestSyncInvalidationUnnoticedDrop(t *testing.T) {
	srv := redistest.Start(t)
	version, load := versioned()
	const timeout = 10 * time.Second // longer than a lease: A outwaits B's
	a := newCache(t, srv, load, cacheaside.WithSyncInvalidation(timeout))
	rdb := srv.Client(t)
	hook := &slowReads{pubsubOnly: true}
	rdb.AddHook(hook)
	b := newCacheOn(t, rdb, load, localFirst...)
	waitSubscribed(t, srv, 1)
	ctx := testContext(t)

	delays := []time.Duration{0, 0, 100 * time.Millisecond, 700 * time.Millisecond, 1500 * time.Millisecond, 0}
	var nilReturns int
	for i, d := range delays {
		waitFor(t, waitLimit, "B serves k from its L1", func() bool {
			hits := b.Stats().LocalHits
			got, err := b.Get(ctx, "k")
			return err == nil && got == version.Load() && b.Stats().LocalHits > hits
		})
		release := hook.stall()
		srv.CLI(t, "CLIENT", "KILL", "TYPE", "pubsub")
		time.Sleep(d)
		v := version.Add(1)
		start := time.Now()
		err := a.Invalidate(ctx, "k")
		took := time.Since(start)
		switch {
		case err == nil:
			nilReturns++
			if got, gerr := b.Get(ctx, "k"); gerr != nil || got != v {
				t.Errorf("round %d (%v after the kill): B.Get(k) after A's synchronous Invalidate returned nil (after %v) = %v, %v; want %d", i, d, took, got, gerr, v)
			}
		case errors.Is(err, cacheaside.ErrNotConfirmed):
			// Allowed (the promise is not claimed), though B's lease
			// should end well within the timeout.
			t.Logf("round %d: A.Invalidate(k) = %v after %v", i, err, took)
		default:
			t.Errorf("round %d: A.Invalidate(k) = %v, want nil or ErrNotConfirmed", i, err)
		}
		release()
	}
	if nilReturns == 0 {
		t.Errorf("no round returned nil: B's ended lease never let A return, and the test checked no Get on B")
	}
	t.Logf("%d rounds: %d returned nil", len(delays), nilReturns)
}

// TestLeaseHoldsOnASlowRedis: overload is not an outage. B's every read
// from Redis arrives 100ms late; its lease keeps being renewed, so for
// two leases' time every Get on B is an L1 hit, and A's synchronous
// Invalidates all succeed.
func TestLeaseHoldsOnASlowRedis(t *testing.T) {
	srv := redistest.Start(t)
	version, load := versioned()
	fleet, slow := syncFleet(t, srv, load, 2, 1, cacheaside.WithSyncInvalidation(5*time.Second))
	a, b := fleet[0], fleet[1]
	ctx := testContext(t)
	slow.delay.Store(int64(100 * time.Millisecond))
	waitFor(t, waitLimit, "B serves k from its L1", func() bool {
		hits := b.Stats().LocalHits
		got, err := b.Get(ctx, "k")
		return err == nil && got == version.Load() && b.Stats().LocalHits > hits
	})
	var gets, misses int
	for end := time.Now().Add(2 * 3 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		hits := b.Stats().LocalHits
		mustGetValue(t, b, "k", version.Load(), "B")
		gets++
		if b.Stats().LocalHits == hits {
			misses++
		}
	}
	if misses != 0 {
		t.Errorf("%d of %d Gets on B missed its L1 while Redis answered 100ms late, want 0: its lease lapsed", misses, gets)
	}
	for i := range 5 {
		v := version.Add(1)
		if err := a.Invalidate(ctx, "k"); err != nil {
			t.Errorf("A.Invalidate(k) #%d with B 100ms late = %v, want nil", i, err)
		}
		mustGetValue(t, b, "k", v, "B right after A's Invalidate")
	}
}
