package cacheaside_test

import (
	"errors"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestReplayNotReplicatedIsApplied: with WithReplicaAcks, an Invalidate
// that cannot reach the primary (frozen) is queued. The primary thaws
// while its replica is frozen: the replay applies the invalidation on the
// primary and its WAIT times out, as a direct Invalidate's would, which
// returns ErrNotReplicated and queues nothing. The replayed key must then
// leave the queue too (it is in place on the primary), not stay pending,
// retried every round and loaded from the database on every Get, for as
// long as the replica lags.
func TestReplayNotReplicatedIsApplied(t *testing.T) {
	p := redistest.Start(t)
	r := redistest.StartReplica(t, p)
	const wait = 100 * time.Millisecond
	db := newRowVersion("v1")
	c := newCacheOn(t, p.Client(t), db.load, cacheaside.WithRedisTimeout(200*time.Millisecond), cacheaside.WithReplicaAcks(1, wait))
	mustGetValue(t, c, "k", "v1", "before the freeze")

	thawP := freezeServer(t, p)
	db.v.Store("v2")
	checkQueuedErr(t, "Invalidate", c.Invalidate(testContext(t), "k"))
	freezeServer(t, r)
	thawP()
	waitFor(t, 10*time.Second, "the replay applies k on the primary", func() bool { return p.CountExisting(t, c.RedisKey("k")) == 0 })
	time.Sleep(time.Second) // several replay rounds
	if st := c.Stats(); st.InvalidationsPending != 0 {
		t.Fatalf("a second after the primary applied the replayed invalidation of k, Stats = %+v; want InvalidationsPending 0 (the primary has it; only the replica lags)", st)
	}
	mustGetValue(t, c, "k", "v2", "after the replay")
	before := c.Stats().Loads
	mustGetValue(t, c, "k", "v2", "a Redis hit")
	if n := c.Stats().Loads - before; n != 0 {
		t.Errorf("the second Get of k after the replay loaded %d times, want 0 (a Redis hit)", n)
	}
}

// TestCloseDuringReplicaWait: Close while an Invalidate waits for a frozen
// replica returns once that WAIT ends (the Invalidate returns
// ErrNotReplicated, not ErrClosed or a Redis error), and its flush of a
// queued key that the replica cannot confirm either returns nil: the
// primary applied it. goleak (TestMain) checks that nothing is left.
func TestCloseDuringReplicaWait(t *testing.T) {
	p := redistest.Start(t)
	r := redistest.StartReplica(t, p)
	const wait = 2 * time.Second
	db := newRowVersion("v1")
	c, err := cacheaside.New(p.Client(t), db.load, cacheaside.WithRedisTimeout(200*time.Millisecond), cacheaside.WithReplicaAcks(1, wait))
	if err != nil {
		t.Fatalf("New = %v", err)
	}
	ctx := testContext(t)
	mustGetValue(t, c, "q", "v1", "before the freeze")
	thawP := freezeServer(t, p)
	checkQueuedErr(t, "Invalidate(q)", c.Invalidate(ctx, "q"))
	freezeServer(t, r)
	thawP()

	done := make(chan error, 1)
	go func() { done <- c.Invalidate(ctx, "k") }()
	time.Sleep(300 * time.Millisecond) // the Invalidate is in its WAIT
	start := time.Now()
	closeErr := c.Close()
	took := time.Since(start)
	if closeErr != nil {
		t.Errorf("Close with q queued and applied on the primary only = %v, want nil", closeErr)
	}
	if err := await(t, done, "the Invalidate in its WAIT"); !errors.Is(err, cacheaside.ErrNotReplicated) {
		t.Errorf("Invalidate(k) across Close = %v, want ErrNotReplicated", err)
	}
	if took > 3*wait+2*time.Second {
		t.Errorf("Close took %v", took)
	}
	t.Logf("Close took %v (WAIT timeout %v)", took, wait)
}
