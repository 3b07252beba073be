package cacheaside_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// Failover tests: a primary of a real Redis Cluster or Sentinel setup dies
// under load, and what a failover does to a fill lock.

// The failover tests kill -9 the primary that serves the keys under load
// and check that the cache returns no error and goes back to Redis hits by
// itself; see runFailover. Each runs with the cache's default options
// (no L1: every Get that cannot reach Redis loads) and with an L1
// (WithLocalCache), which bounds the loads to about none: the keys were
// read before, so the L1 answers while their primary is gone.

func TestClusterPrimaryFailover(t *testing.T) {
	cl := redistest.StartCluster(t)
	clusterFailover(t, cl, cl.Client(t))
}

func TestClusterPrimaryFailoverWithL1(t *testing.T) {
	cl := redistest.StartCluster(t)
	clusterFailover(t, cl, cl.Client(t), cacheaside.WithLocalCache(1000, time.Minute))
}

// TestClusterPrimaryFailoverFastReload is TestClusterPrimaryFailover with
// ClusterStateReloadInterval lowered to 1s: go-redis reloads the slot map
// only on MOVED/ASK/READONLY replies or after that interval (default 60s),
// never on a connection error to a dead primary.
func TestClusterPrimaryFailoverFastReload(t *testing.T) {
	cl := redistest.StartCluster(t)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), ClusterStateReloadInterval: time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	clusterFailover(t, cl, rdb)
}

func clusterFailover(t *testing.T, cl *redistest.Cluster, rdb *redis.ClusterClient, opts ...cacheaside.Option) {
	t.Helper()
	// Pick failoverKeys keys whose slots the same primary owns.
	victim := cl.PrimaryFor(strconv.Itoa(0))
	candidates := make([]string, 6*failoverKeys)
	for k := range candidates {
		candidates[k] = strconv.Itoa(k)
	}
	var keys []int
	for k, owner := range cl.Owners(candidates) {
		if owner == victim && len(keys) < failoverKeys {
			keys = append(keys, k)
		}
	}
	if len(keys) < failoverKeys {
		t.Fatalf("%s owns %d of the keys 0..%d, want %d", victim.Addr(), len(keys), len(candidates)-1, failoverKeys)
	}
	replicas := cl.ReplicasOf(victim)
	if len(replicas) != 1 {
		t.Fatalf("ReplicasOf(%s) = %d nodes, want 1", victim.Addr(), len(replicas))
	}
	runFailover(t, failoverTopology{
		name: "Cluster",
		replicated: func(valueKeys []string) int {
			cl.WaitReplicated()
			return replicas[0].CountExisting(t, valueKeys...)
		},
		kill: func() {
			if p := cl.KillPrimaryFor(strconv.Itoa(keys[0])); p != victim {
				t.Fatalf("killed %s, want %s", p.Addr(), victim.Addr())
			}
		},
		promoted: func() bool {
			p := cl.PrimaryFor(strconv.Itoa(keys[0]))
			return p != nil && p != victim
		},
	}, rdb, keys, opts...)
	// go-redis keeps a goroutine per dead node that redials once a second
	// until the node answers or the client closes; bring the node back (it
	// rejoins as a replica) and give that goroutine one round to see it,
	// so that goleak does not catch it on its way out.
	victim.Start()
	time.Sleep(1500 * time.Millisecond)
}

func TestSentinelPrimaryFailover(t *testing.T) {
	sentinelFailover(t)
}

func TestSentinelPrimaryFailoverWithL1(t *testing.T) {
	sentinelFailover(t, cacheaside.WithLocalCache(1000, time.Minute))
}

func sentinelFailover(t *testing.T, opts ...cacheaside.Option) {
	s := redistest.StartSentinel(t)
	var victim *redistest.Server
	runFailover(t, failoverTopology{
		name: "Sentinel",
		replicated: func(valueKeys []string) int {
			s.WaitReplicated()
			return s.Replica().CountExisting(t, valueKeys...)
		},
		kill:     func() { victim = s.KillPrimary() },
		promoted: func() bool { return s.Primary() != victim },
	}, s.Client(t), faultKeys(0, failoverKeys-1), opts...)
}

// failoverKeys is how many keys the failover tests read under load, all
// served by the primary that is killed.
const failoverKeys = 200

// failoverTopology is what runFailover needs of a Cluster or Sentinel
// setup.
type failoverTopology struct {
	name string
	// replicated waits until the replica that is to be promoted has every
	// write its primary acknowledged, and returns how many of valueKeys it
	// holds.
	replicated func(valueKeys []string) int
	// kill kills -9 the primary of the keys.
	kill func()
	// promoted reports whether a replica has taken over the keys.
	promoted func() bool
}

// failoverReport is what runFailover measured, from the kill on.
type failoverReport struct {
	promoted time.Duration // until the topology had a new primary for the keys
	degraded time.Duration // until the last Get that was not a Redis hit
	loads    int64         // loader calls
	gets     int64
	errors   int64
	p99      time.Duration // of the Gets started while degraded

}

// runFailover warms keys into a cache over rdb (with opts), runs Gets of
// them from 8 goroutines, checks that every value is on the replica (all
// 200 of 200: topo.replicated waits for replication), calls topo.kill,
// and waits until the cache serves
// those keys from Redis again by itself: a full second of Redis hits with
// no miss and no L1 answer. It polls topo.promoted to time the topology's
// own failover. Every Get must return the loader's value with a nil error
// throughout; at most one load per key runs at a time, with an L1 each key
// may be loaded at most once (the bound the L1 gives while Redis is
// unreachable), and the cache must be back on
// Redis hits within a generous 5 s of the promotion (the README reports
// the measured lag; without the cache's own slot-map reloads a Cluster
// client stays on the dead node for up to a minute).
func runFailover(t *testing.T, topo failoverTopology, rdb redis.UniversalClient, keys []int, opts ...cacheaside.Option) {
	t.Helper()
	const (
		recoverWithin = 30 * time.Second
		quietFor      = time.Second
	)
	ld := &faultLoader{}
	c := newFaultCache(t, rdb, ld.load, opts...)
	withL1 := len(opts) > 0
	mustGetAll(t, c, keys)
	waitFor(t, 10*time.Second, "warm keys are Redis hits", func() bool {
		before := c.Stats()
		mustGetAll(t, c, keys)
		after := c.Stats()
		return after.Loads == before.Loads && after.Hits-before.Hits == uint64(len(keys))
	})
	nonHits := func(st cacheaside.Stats) uint64 { return st.Misses + st.LocalHits + st.StaleServed }

	type sample struct {
		start time.Time
		took  time.Duration
	}
	var (
		gets, errs atomic.Int64
		stop       = make(chan struct{})
		wg         sync.WaitGroup
		firstErr   atomic.Value
		mu         sync.Mutex
		samples    []sample
	)
	for w := range 8 {
		wg.Go(func() {
			var mine []sample
			defer func() {
				mu.Lock()
				samples = append(samples, mine...)
				mu.Unlock()
			}()
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := keys[i%len(keys)]
				ctx, cancel := context.WithTimeout(context.Background(), faultGetTimeout)
				start := time.Now()
				v, err := c.Get(ctx, k)
				mine = append(mine, sample{start, time.Since(start)})
				cancel()
				gets.Add(1)
				if err != nil || v != faultValue(k) {
					errs.Add(1)
					if err == nil {
						err = errors.New("wrong value " + v)
					}
					firstErr.CompareAndSwap(nil, err)
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	halt := func() {
		select {
		case <-stop:
		default:
			close(stop)
			wg.Wait()
		}
	}
	defer halt()

	time.Sleep(300 * time.Millisecond) // steady state before the kill
	// Replication is asynchronous: a value the primary has but its replica
	// not yet is lost with the primary, and its next Get is a load that
	// says nothing about the cache. Every value must be on the replica
	// before the kill (nothing writes them now: every Get is a hit).
	vks := valueKeys("ca:", keys)
	if n := topo.replicated(vks); n != len(vks) {
		t.Fatalf("%d of %d values on the replica before the kill, want all", n, len(vks))
	}
	t.Logf("%d of %d values on the replica before the kill", len(vks), len(vks))
	base := c.Stats()
	baseLoads := ld.calls.Load()
	baseGets := gets.Load()
	killed := time.Now()
	topo.kill()

	// Track the last moment a Get was answered other than by a Redis hit;
	// done when that stayed flat for quietFor while hits kept growing.
	var promotedAt time.Time
	lastDegraded := killed
	prevNon, prevHits, quietSince := nonHits(base), base.Hits, time.Now()
	deadline := killed.Add(recoverWithin)
	for {
		time.Sleep(50 * time.Millisecond)
		now := time.Now()
		if promotedAt.IsZero() && topo.promoted() {
			promotedAt = time.Now()
		}
		st := c.Stats()
		non, hits := nonHits(st), st.Hits
		if non != prevNon {
			lastDegraded = now
			quietSince = now
		}
		if hits == prevHits {
			quietSince = now
		}
		prevNon, prevHits = non, hits
		if !promotedAt.IsZero() && non > nonHits(base) && now.Sub(quietSince) >= quietFor {
			break
		}
		if now.After(deadline) {
			gctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, gerr := rdb.Get(gctx, "ca:{"+strconv.Itoa(keys[0])+"}").Result()
			cancel()
			t.Fatalf("direct GET through the same client now: %v; cache did not return to Redis hits within %v of the kill (promoted: %v): loader calls %d, Stats %+v",
				gerr, recoverWithin, !promotedAt.IsZero(), ld.calls.Load()-baseLoads, st)
		}
	}
	halt()
	st := c.Stats()
	r := failoverReport{
		promoted: promotedAt.Sub(killed),
		degraded: lastDegraded.Sub(killed),
		loads:    ld.calls.Load() - baseLoads,
		gets:     gets.Load() - baseGets,
		errors:   errs.Load(),
	}
	var during []time.Duration
	for _, s := range samples {
		if !s.start.Before(killed) && !s.start.After(lastDegraded) {
			during = append(during, s.took)
		}
	}
	slices.Sort(during)
	if len(during) > 0 {
		r.p99 = during[len(during)*99/100]
	}
	variant := "default options"
	if withL1 {
		variant = "WithLocalCache"
	}
	t.Logf("| %s | %s | %.1f s | %.1f s | %+.1f s | %d | %d | %d | %v |", topo.name, variant,
		r.promoted.Seconds(), r.degraded.Seconds(), (r.degraded - r.promoted).Seconds(), r.loads, r.gets, r.errors, r.p99.Round(time.Microsecond))
	t.Logf("stats delta: Hits +%d Misses +%d LocalHits +%d RedisErrors +%d RedisSkipped +%d Abandoned +%d BreakerOpens +%d LockAcquired +%d FillConflicts +%d RestartsDetected +%d; breaker %s",
		st.Hits-base.Hits, st.Misses-base.Misses, st.LocalHits-base.LocalHits, st.RedisErrors-base.RedisErrors, st.RedisSkipped-base.RedisSkipped,
		st.Abandoned-base.Abandoned, st.BreakerOpens-base.BreakerOpens, st.LockAcquired-base.LockAcquired,
		st.FillConflicts-base.FillConflicts, st.RestartsDetected-base.RestartsDetected, st.Breaker)
	if r.errors != 0 {
		t.Errorf("%d of %d Gets failed during the failover; first: %v", r.errors, r.gets, firstErr.Load())
	}
	if withL1 && r.loads > int64(len(keys)) {
		t.Errorf("with an L1, %d loader calls for %d keys during the failover, want at most one per key", r.loads, len(keys))
	}
	// Without an L1 every Get of a key whose primary is gone loads, but
	// the Gets of one key in one process share one load at a time.
	if n := ld.maxRunning.Load(); n > int64(len(keys)) {
		t.Errorf("%d loads ran at once for %d keys, want at most one per key", n, len(keys))
	}
	if lag := r.degraded - r.promoted; lag > 5*time.Second {
		t.Errorf("back on Redis hits %v after the promotion, want well within 5s", lag)
	}
}

// TestFillLockLostInFailover shows what a failover does to a fill lock, and
// that it costs a load, never a stale value.
//
// Redis replicates asynchronously: a primary acknowledges a write before
// its replica has it, so a replica promoted after the primary died may lack
// the last writes, among them a fill lock. The test makes that lag
// deterministic: the replica stops replicating (REPLICAOF NO ONE) before
// instance A takes the lock on the primary and starts a slow load. Then the
// primary is killed (-9) and the clients' address moves to the replica, the
// way a virtual IP or DNS name moves on a managed Redis. The row changes
// and instance B invalidates the key on the new primary.
//
// The lock is gone, so B loads the key too while A's load is still running:
// two loads, which is the lock's whole job lost, nothing more. A's load
// read the row before the Invalidate; its fill is conditional on the
// generation it saw at the start, which the Invalidate replaced, so it is
// refused, and A answers with the new value that B stored.
func TestFillLockLostInFailover(t *testing.T) {
	primary := redistest.Start(t)
	replica := redistest.StartReplica(t, primary)

	var target atomic.Value // the address "the primary" resolves to
	target.Store(primary.Addr())
	newClient := func() *redis.Client {
		rdb := redis.NewClient(&redis.Options{
			Addr: "redis-primary.invalid:6379",
			Dialer: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, target.Load().(string))
			},
		})
		t.Cleanup(func() { _ = rdb.Close() })
		return rdb
	}

	var (
		version  atomic.Int64 // the row's version: the loader returns "v<version>"
		calls    atomic.Int64
		aRead    = make(chan struct{})
		aRelease = make(chan struct{})
	)
	version.Store(1)
	load := func(ctx context.Context, k int) (string, error) {
		n := calls.Add(1)
		v := "v" + strconv.FormatInt(version.Load(), 10)
		if n == 1 { // A's load: it has read the row; it stalls until released
			close(aRead)
			select {
			case <-aRelease:
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		return v, nil
	}
	opts := []cacheaside.Option{cacheaside.WithRedisTimeout(time.Second), cacheaside.WithLockTTL(30 * time.Second)}
	rdbA, rdbB := newClient(), newClient()
	a := newFaultCache(t, rdbA, load, opts...)
	b := newFaultCache(t, rdbB, load, opts...)
	ctx := testContext(t)
	const key = 7
	lockKey := valueKey(strconv.Itoa(key)) + ":lock"

	// The replica falls behind for good: what the primary gets from now on
	// is what a failover loses.
	replica.CLI(t, "REPLICAOF", "NO", "ONE")

	aDone := getAsync(ctx, a, key)
	await(t, aRead, "A's load starts")
	if got := primary.CLI(t, "EXISTS", lockKey); got != "1" {
		t.Fatalf("EXISTS %s on the primary = %s, want 1: A holds the fill lock", lockKey, got)
	}
	if got := replica.CLI(t, "EXISTS", lockKey); got != "0" {
		t.Fatalf("EXISTS %s on the replica = %s, want 0: the lock was written after the replica fell behind", lockKey, got)
	}

	// Failover: the primary dies, the address moves to the replica.
	target.Store(replica.Addr())
	primary.Kill()
	for _, rdb := range []*redis.Client{rdbA, rdbB} {
		waitFor(t, 5*time.Second, "the clients reach the new primary", func() bool {
			// Each failed Ping drops one dead pooled connection, and the
			// pool may hold more than one: wait until two Pings in a row
			// succeed (written as a loop; a && of the same two calls reads
			// as a slip, staticcheck SA4000).
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			for range 2 {
				if rdb.Ping(pctx).Err() != nil {
					return false
				}
			}
			return true
		})
	}

	// The row changes; B invalidates on the new primary, then reads.
	version.Store(2)
	if err := b.Invalidate(ctx, key); err != nil {
		t.Fatalf("B.Invalidate after the failover: %v", err)
	}
	if v, err := b.Get(ctx, key); err != nil || v != "v2" {
		t.Fatalf("B.Get = %q, %v, want v2, nil", v, err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("loader calls = %d, want 2: B had to load, since the lock A held was lost with the old primary", n)
	}

	close(aRelease)
	res := await(t, aDone, "A's Get")
	if res.err != nil || res.val != "v2" {
		t.Errorf("A.Get = %q, %v, want v2, nil: A's load read the row before the Invalidate and must not be handed out or written", res.val, res.err)
	}
	if got := replica.CLI(t, "GET", valueKey(strconv.Itoa(key))); !strings.Contains(got, "v2") || strings.Contains(got, "v1") {
		t.Errorf("the new primary stores %q, want the v2 entry", got)
	}
	if st := a.Stats(); st.FillConflicts == 0 {
		t.Errorf("A's Stats().FillConflicts = 0, want its fill of v1 refused; Stats %+v", st)
	}
	t.Logf("loader calls: %d (A's stale v1 discarded, B's v2 stored); A: %+v", calls.Load(), a.Stats())
}
