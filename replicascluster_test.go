package cacheaside_test

import (
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestReplicaAcksClusterOneNodeLags: on a Cluster with the replica of one
// primary frozen, an Invalidate of keys on two primaries applies both,
// waits on each primary for its own replica, and returns ErrNotReplicated
// for the lagging node only: nothing queued, no Redis error, no breaker
// opened; a Set of a key of the other primary returns nil at once.
func TestReplicaAcksClusterOneNodeLags(t *testing.T) {
	cl := redistest.StartCluster(t)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), ReadTimeout: ackReadTimeout})
	t.Cleanup(func() { _ = rdb.Close() })
	const wait = 300 * time.Millisecond
	db := newRowVersion("v")
	c := newCacheOn(t, rdb, db.load, cacheaside.WithRedisTimeout(ackRedisTimeout), cacheaside.WithReplicaAcks(1, wait))
	live, lag := "k0", ""
	for i := 1; lag == ""; i++ {
		if k := "k" + strconv.Itoa(i); cl.PrimaryFor(c.RedisKey(k)) != cl.PrimaryFor(c.RedisKey(live)) {
			lag = k
		}
	}
	ctx := testContext(t)
	for _, k := range []string{live, lag} {
		mustGetValue(t, c, k, "v", "before the freeze")
	}
	cl.WaitReplicated()
	replicas := cl.ReplicasOf(cl.PrimaryFor(c.RedisKey(lag)))
	if len(replicas) != 1 {
		t.Fatalf("the primary of %s has %d replicas, want 1", lag, len(replicas))
	}
	freezeServer(t, replicas[0])

	err := c.Invalidate(ctx, live, lag)
	if !errors.Is(err, cacheaside.ErrNotReplicated) || errors.Is(err, cacheaside.ErrQueued) || errors.Is(err, cacheaside.ErrRedisUnavailable) {
		t.Fatalf("Invalidate(%s, %s) = %v; want ErrNotReplicated, neither ErrQueued nor ErrRedisUnavailable", live, lag, err)
	}
	for _, k := range []string{live, lag} {
		if cl.PrimaryFor(c.RedisKey(k)).CountExisting(t, c.RedisKey(k)) != 0 {
			t.Errorf("%s is still on its primary after the Invalidate", k)
		}
	}
	start := time.Now()
	if err := c.Set(ctx, live, "set"); err != nil {
		t.Fatalf("Set(%s) on the primary whose replica answers = %v, want nil", live, err)
	}
	if took := time.Since(start); took >= wait {
		t.Errorf("Set(%s) took %v: it waited for the other node's replica (WAIT timeout %v)", live, took, wait)
	}
	st := c.Stats()
	if st.InvalidationsQueued != 0 || st.RedisErrors != 0 || st.BreakerOpens != 0 {
		t.Fatalf("Stats = %+v; want nothing queued, no Redis errors, no breaker opens", st)
	}
}
