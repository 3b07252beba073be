package cacheaside_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// The replica acknowledgement tests (WithReplicaAcks). Redis replicates
// asynchronously: a primary that acknowledged an Invalidate and is killed
// before its replica read the change hands the replica the old value. The
// tests open that window on purpose: with the replica frozen (SIGSTOP),
// the primary writes a filler larger than the loopback socket buffers
// before the Invalidate, so that the Invalidate waits in the primary's
// output buffer, which dies with it.

// ackTimeout is the WAIT timeout of the failover tests: ample for a
// thawed replica to read the filler and acknowledge on a loaded machine.
const (
	ackTimeout      = 5 * time.Second
	ackRedisTimeout = time.Second
	ackReadTimeout  = 10 * time.Second // the clients' ReadTimeout: above both
)

// ackClient returns a client of srv whose ReadTimeout (ackReadTimeout)
// leaves room for a WAIT of ackTimeout on top of the Redis timeout, which
// WithReplicaAcks requires.
func ackClient(t *testing.T, srv *redistest.Server) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ReadTimeout: ackReadTimeout})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// rowVersion is a loader whose value is the current version of its row.
type rowVersion struct{ v atomic.Value }

func newRowVersion(v string) *rowVersion {
	d := &rowVersion{}
	d.v.Store(v)
	return d
}

func (d *rowVersion) load(context.Context, string) (string, error) { return d.v.Load().(string), nil }

// fillerSize exceeds what the kernel buffers between the primary and a
// frozen replica on loopback (a few MiB each way).
const fillerSize = 32 << 20

// invalidateThenKill caches "old" for key "k" over rdb (with opts), waits
// until replica has it, makes the row "new", freezes replica, writes a
// filler on primary, invalidates "k" and kills primary. With acked, the
// replica is thawed 300ms into the Invalidate (so that it can
// acknowledge), else after the kill. It returns how long Invalidate took and
// its error.
func invalidateThenKill(t *testing.T, rdb redis.UniversalClient, primary, replica *redistest.Server, replicated func(), acked bool, opts ...cacheaside.Option) (*cacheaside.Cache[string, string], time.Duration, error) {
	t.Helper()
	ctx := testContext(t)
	db := newRowVersion("old")
	opts = append([]cacheaside.Option{cacheaside.WithRedisTimeout(ackRedisTimeout)}, opts...)
	c := newCacheOn(t, rdb, db.load, opts...)
	if v, err := c.Get(ctx, "k"); err != nil || v != "old" {
		t.Fatalf("Get(k) = %q, %v; want old, nil", v, err)
	}
	replicated()
	db.v.Store("new")
	thaw := freezeServer(t, replica)
	primary.CLI(t, "SET", c.RedisKey("k")+":filler", strings.Repeat("x", fillerSize))
	if acked {
		timer := time.AfterFunc(300*time.Millisecond, thaw)
		defer timer.Stop()
	}
	start := time.Now()
	err := c.Invalidate(ctx, "k")
	took := time.Since(start)
	primary.Kill()
	thaw()
	return c, took, err
}

// TestReplicaAcksSurviveSentinelFailover: with WithReplicaAcks, an
// Invalidate acknowledged right before the primary is killed is not undone
// by the failover: the promoted replica does not hold the old value, and
// the cache then serves the new row. Without the option (the control, which
// shows the test can fail) the same sequence leaves the promoted replica
// serving the old value.
func TestReplicaAcksSurviveSentinelFailover(t *testing.T) {
	for _, acked := range []bool{true, false} {
		t.Run(ackName(acked), func(t *testing.T) {
			s := redistest.StartSentinel(t)
			victim := s.Primary()
			rdb := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: s.MasterName(), SentinelAddrs: s.SentinelAddrs(), ReadTimeout: ackReadTimeout})
			t.Cleanup(func() { _ = rdb.Close() })
			c, took, err := invalidateThenKill(t, rdb, victim, s.Replica(), s.WaitReplicated, acked, ackOpts(acked)...)
			if err != nil {
				t.Fatalf("Invalidate(k) = %v after %v, want nil", err, took)
			}
			waitFor(t, 30*time.Second, "the sentinels promote the replica", func() bool { return s.Primary() != victim })
			checkPromoted(t, rdb, c, acked)
		})
	}
}

// TestReplicaAcksSurviveClusterFailover is the Sentinel test on a Redis
// Cluster: the key's primary waits for its own replica, and the replica
// the cluster promotes does not hold the old value.
func TestReplicaAcksSurviveClusterFailover(t *testing.T) {
	for _, acked := range []bool{true, false} {
		t.Run(ackName(acked), func(t *testing.T) {
			cl := redistest.StartCluster(t)
			// A 5s node timeout instead of 1s: on a loaded machine the
			// primary, busy with the filler while its replica is frozen,
			// missed gossip for a second, was failed over while its WAIT
			// ran ("UNBLOCKED ... master -> replica"), and the test was
			// no longer about the kill.
			for _, n := range cl.Nodes() {
				n.CLI(t, "CONFIG", "SET", "cluster-node-timeout", "5000")
			}
			rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), ReadTimeout: ackReadTimeout})
			t.Cleanup(func() { _ = rdb.Close() })
			key := "ca:{k}" // the key layout of the package documentation
			victim := cl.PrimaryFor(key)
			replicas := cl.ReplicasOf(victim)
			if len(replicas) != 1 {
				t.Fatalf("the primary of k has %d replicas, want 1", len(replicas))
			}
			c, took, err := invalidateThenKill(t, rdb, victim, replicas[0], cl.WaitReplicated, acked, ackOpts(acked)...)
			if c.RedisKey("k") != key {
				t.Fatalf("RedisKey(k) = %q, want %q", c.RedisKey("k"), key)
			}
			if err != nil {
				t.Fatalf("Invalidate(k) = %v after %v, want nil", err, took)
			}
			waitFor(t, 30*time.Second, "the cluster promotes the replica", func() bool {
				p := cl.PrimaryFor(key)
				return p != nil && p != victim
			})
			checkPromoted(t, rdb, c, acked)
		})
	}
}

func ackName(acked bool) string {
	if acked {
		return "acked"
	}
	return "control"
}

func ackOpts(acked bool) []cacheaside.Option {
	if acked {
		return []cacheaside.Option{cacheaside.WithReplicaAcks(1, ackTimeout)}
	}
	return nil
}

// checkPromoted checks, once the client reaches the promoted replica,
// that it does not hold k's old value (acked) or that it does (the
// control), and that Get then returns the new row (acked).
func checkPromoted(t *testing.T, rdb redis.UniversalClient, c *cacheaside.Cache[string, string], acked bool) {
	t.Helper()
	ctx := testContext(t)
	var n int64
	waitFor(t, 30*time.Second, "the client reaches the promoted replica", func() bool {
		if cc, ok := rdb.(*redis.ClusterClient); ok {
			cc.ReloadState(ctx)
		}
		var err error
		n, err = rdb.Exists(ctx, c.RedisKey("k")).Result()
		return err == nil
	})
	if !acked {
		if n != 1 {
			t.Fatalf("control: the promoted replica lacks k's old value: the test did not open the replication window it relies on")
		}
		t.Logf("control: without WithReplicaAcks the promoted replica holds the old value of k after an Invalidate that returned nil")
		return
	}
	if n != 0 {
		t.Fatalf("the promoted replica holds k's old value after an acknowledged Invalidate")
	}
	waitFor(t, 30*time.Second, "Get(k) returns the new row", func() bool {
		v, err := c.Get(ctx, "k")
		if err == nil && v == "old" {
			t.Fatalf("Get(k) = old after an acknowledged Invalidate and a failover, want new")
		}
		return err == nil && v == "new"
	})
}

// TestReplicaAcksNotConfirmed: with the replica frozen, Set and Invalidate
// apply on the primary, wait the WAIT timeout and return an error that
// matches ErrNotReplicated and not ErrRedisUnavailable; a replica that
// does not answer is not a Redis outage: the breaker stays closed and
// Gets stay Redis hits.
func TestReplicaAcksNotConfirmed(t *testing.T) {
	p := redistest.Start(t)
	r := redistest.StartReplica(t, p)
	ctx := testContext(t)
	const wait = 200 * time.Millisecond
	db := newRowVersion("v")
	c := newCacheOn(t, p.Client(t), db.load, cacheaside.WithRedisTimeout(ackRedisTimeout), cacheaside.WithReplicaAcks(1, wait))
	freezeServer(t, r)
	for _, op := range []struct {
		name string
		call func() error
	}{
		{"Set", func() error { return c.Set(ctx, "k", "set") }},
		{"Invalidate", func() error { return c.Invalidate(ctx, "k") }},
	} {
		start := time.Now()
		err := op.call()
		took := time.Since(start)
		if !errors.Is(err, cacheaside.ErrNotReplicated) || errors.Is(err, cacheaside.ErrRedisUnavailable) || errors.Is(err, cacheaside.ErrQueued) {
			t.Fatalf("%s = %v, want an error matching ErrNotReplicated and neither ErrRedisUnavailable nor ErrQueued (the primary has the change)", op.name, err)
		}
		if !strings.Contains(err.Error(), "0 of 1 replicas") {
			t.Errorf("%s error %q does not say how many replicas confirmed", op.name, err)
		}
		if took < wait {
			t.Errorf("%s returned after %v, before the WAIT timeout %v", op.name, took, wait)
		}
	}
	if p.CountExisting(t, c.RedisKey("k")) != 0 {
		t.Fatalf("the Invalidate did not apply on the primary")
	}
	for range 3 {
		if v, err := c.Get(ctx, "k"); err != nil || v != "v" {
			t.Fatalf("Get(k) = %q, %v; want v, nil", v, err)
		}
	}
	st := c.Stats()
	if st.Loads != 1 || st.RedisErrors != 0 || st.BreakerOpens != 0 || st.InvalidationsQueued != 0 {
		t.Fatalf("Stats = %+v; want 1 load, no Redis errors, no breaker opens, nothing queued", st)
	}
}

// TestReplicaAcksSetIsOnTheReplica: n 1 on a primary with a
// live replica acknowledges at once; Set's value is on the replica when it
// returns. The WAIT timeout is ackTimeout, as in
// TestReplicaAcksClearIsOnTheReplica.
func TestReplicaAcksSetIsOnTheReplica(t *testing.T) {
	p := redistest.Start(t)
	r := redistest.StartReplica(t, p)
	ctx := testContext(t)
	c := newCacheOn(t, ackClient(t, p), newRowVersion("v").load, cacheaside.WithRedisTimeout(ackRedisTimeout), cacheaside.WithReplicaAcks(1, ackTimeout))
	for i := range 20 {
		if err := c.Set(ctx, "k", "set"); err != nil {
			t.Fatalf("Set #%d = %v, want nil", i, err)
		}
		if r.CountExisting(t, c.RedisKey("k")) != 1 {
			t.Fatalf("after Set #%d returned, the replica does not hold k", i)
		}
		if err := c.Invalidate(ctx, "k"); err != nil {
			t.Fatalf("Invalidate #%d = %v, want nil", i, err)
		}
		if r.CountExisting(t, c.RedisKey("k")) != 0 {
			t.Fatalf("after Invalidate #%d returned, the replica still holds k", i)
		}
	}
}

// TestReplicaAcksOptionErrors: New rejects what it cannot honour.
func TestReplicaAcksOptionErrors(t *testing.T) {
	load := newRowVersion("v").load
	short := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ReadTimeout: 500 * time.Millisecond})
	t.Cleanup(func() { _ = short.Close() })
	ring := redis.NewRing(&redis.RingOptions{Addrs: map[string]string{"a": "127.0.0.1:1"}})
	t.Cleanup(func() { _ = ring.Close() })
	plain := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = plain.Close() })
	for _, tc := range []struct {
		name string
		rdb  redis.UniversalClient
		opt  cacheaside.Option
		want string
	}{
		{"negative", plain, cacheaside.WithReplicaAcks(-1, time.Second), "WithReplicaAcks: -1 replicas is negative"},
		{"no timeout", plain, cacheaside.WithReplicaAcks(1, 0), "WithReplicaAcks: timeout 0s must be a positive whole number of milliseconds"},
		{"sub-millisecond", plain, cacheaside.WithReplicaAcks(1, 1500*time.Microsecond), "WithReplicaAcks: timeout 1.5ms must be a positive whole number"},
		{"read timeout", short, cacheaside.WithReplicaAcks(1, time.Second), "exceeds the client's ReadTimeout 500ms"},
		{"ring", ring, cacheaside.WithReplicaAcks(1, time.Second), "WithReplicaAcks: not supported on a redis.Ring"},
	} {
		t.Run(tc.name, func(t *testing.T) { mustRejectOption(t, tc.rdb, load, tc.opt, tc.want) })
	}
	c, err := cacheaside.New(plain, load, cacheaside.WithReplicaAcks(0, 0))
	if err != nil {
		t.Fatalf("New with WithReplicaAcks(0, 0) = %v, want nil (off)", err)
	}
	_ = c.Close()
}
