package cacheaside_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/cacheaside/cacheaside/internal/tagclock"
	"github.com/redis/go-redis/v9"
)

// WithReplicaAcks covers Clear and InvalidateTag as it covers Set and
// Invalidate (replicas.go): the clock script (and on a Cluster every
// replica raise) waits for the replicas of its node.

// TestReplicaAcksClearNotConfirmed: with the replica frozen, Clear and
// InvalidateTag apply on the primary, wait the WAIT timeout and return an
// error that matches ErrNotReplicated and not ErrRedisUnavailable; the
// Clear is in place (another process reloads) and this process goes on
// serving (nothing pending).
func TestReplicaAcksClearNotConfirmed(t *testing.T) {
	p := redistest.Start(t)
	r := redistest.StartReplica(t, p)
	ctx := testContext(t)
	const wait = 200 * time.Millisecond
	db := newVersionDB()
	opts := []cacheaside.Option{cacheaside.WithRedisTimeout(ackRedisTimeout), cacheaside.WithReplicaAcks(1, wait)}
	c := newCacheOn(t, p.Client(t), db.tagged(category), opts...)
	mustGetValue(t, c, "p1", "p1=v1", "warm")
	freezeServer(t, r)
	db.set("v2")
	for _, op := range []struct {
		name string
		call func() error
	}{
		{"Clear", func() error { return c.Clear(ctx) }},
		{"InvalidateTag", func() error { return c.InvalidateTag(ctx, "cat:a") }},
	} {
		start := time.Now()
		err := op.call()
		took := time.Since(start)
		if !errors.Is(err, cacheaside.ErrNotReplicated) || errors.Is(err, cacheaside.ErrRedisUnavailable) {
			t.Fatalf("%s = %v, want an error matching ErrNotReplicated and not ErrRedisUnavailable (the primary has the change)", op.name, err)
		}
		if !strings.Contains(err.Error(), "0 of 1 replicas") {
			t.Errorf("%s error %q does not say how many replicas confirmed", op.name, err)
		}
		if took < wait {
			t.Errorf("%s returned after %v, before the WAIT timeout %v", op.name, took, wait)
		}
	}
	mustGetValue(t, newCacheOn(t, p.Client(t), db.tagged(category)), "p1", "p1=v2", "another process after the unconfirmed Clear")
	mustGetValue(t, c, "p1", "p1=v2", "the clearing process")
	mustGetValue(t, c, "p1", "p1=v2", "the clearing process, again")
	if n := db.loads.Load(); n > 3 {
		t.Errorf("loads = %d, want at most 3 (warm, then one per process)", n)
	}
}

// TestReplicaAcksClearIsOnTheReplica: n 1 on a primary with a live
// replica; when Clear and InvalidateTag return, the replica holds the
// clock they wrote. The WAIT timeout is ackTimeout, not a tight second:
// a live replica acknowledges as soon as it is scheduled, and the test is
// about what holds when the calls return nil, not how soon they do (at a
// load average of 20, "0 of 1 replicas within 1s").
func TestReplicaAcksClearIsOnTheReplica(t *testing.T) {
	p := redistest.Start(t)
	r := redistest.StartReplica(t, p)
	ctx := testContext(t)
	c := newCacheOn(t, ackClient(t, p), newVersionDB().load, cacheaside.WithRedisTimeout(ackRedisTimeout), cacheaside.WithReplicaAcks(1, ackTimeout))
	pc, rc := p.Client(t), r.Client(t)
	for i := range 20 {
		err := c.Clear(ctx)
		if i%2 == 1 {
			err = c.InvalidateTag(ctx, "t")
		}
		if err != nil {
			t.Fatalf("call #%d = %v, want nil", i, err)
		}
		want, _ := pc.Get(ctx, tagclock.Key("ca:")).Result()
		if got, _ := rc.Get(ctx, tagclock.Key("ca:")).Result(); got != want {
			t.Fatalf("after call #%d returned, the replica's clock = %q, want the primary's %q", i, got, want)
		}
	}
}

// TestReplicaAcksClusterClear: on a Cluster with the replica of a primary
// that holds clock replicas but not the clock key frozen, Clear raises
// every replica, waits on that node, and returns ErrNotReplicated (not
// ErrRedisUnavailable); the Clear is in place: another process reloads.
func TestReplicaAcksClusterClear(t *testing.T) {
	cl := redistest.StartCluster(t)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), ReadTimeout: ackReadTimeout})
	t.Cleanup(func() { _ = rdb.Close() })
	const wait = 300 * time.Millisecond
	db := newVersionDB()
	opts := []cacheaside.Option{cacheaside.WithRedisTimeout(ackRedisTimeout), cacheaside.WithReplicaAcks(1, wait)}
	c := newCacheOn(t, rdb, db.load, opts...)
	ctx := testContext(t)
	mustGetValue(t, c, "k0", "k0=v1", "warm")
	clockNode := cl.PrimaryFor(tagclock.Key("ca:"))
	var lag *redistest.Server
	for _, k := range tagclock.ReplicaKeys("ca:") {
		if p := cl.PrimaryFor(k); p != clockNode {
			lag = p
			break
		}
	}
	cl.WaitReplicated()
	replicas := cl.ReplicasOf(lag)
	if len(replicas) != 1 {
		t.Fatalf("the lagging primary has %d replicas, want 1", len(replicas))
	}
	freezeServer(t, replicas[0])
	db.set("v2")
	err := c.Clear(ctx)
	if !errors.Is(err, cacheaside.ErrNotReplicated) || errors.Is(err, cacheaside.ErrRedisUnavailable) {
		t.Fatalf("Clear() = %v, want an error matching ErrNotReplicated and not ErrRedisUnavailable", err)
	}
	if !strings.Contains(err.Error(), "0 of 1 replicas") {
		t.Errorf("Clear() error %q does not say how many replicas confirmed", err)
	}
	mustGetValue(t, newCacheOn(t, rdb, db.load), "k0", "k0=v2", "another process after the unconfirmed Clear")
}
