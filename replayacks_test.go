package cacheaside_test

import (
	"strconv"
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
	r := redistest.Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(p.Port()))
	redistest.WaitReplicated(t, p, r)
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
