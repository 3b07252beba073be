package cacheaside_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// Tests on real Redis Cluster and Sentinel topologies. Each test starts its
// own topology (internal/redistest) and talks to it through go-redis's
// ClusterClient or failover client with default options.

// TestClusterGetSetInvalidate checks that every command and script the
// cache sends touches one slot: 200 keys spread over many slots are loaded,
// hit, set and invalidated with no Redis error at all (Redis faults are
// counted in Stats, never returned, so Stats().RedisErrors is the check).
func TestClusterGetSetInvalidate(t *testing.T) {
	cl := redistest.StartCluster(t)
	var calls atomic.Int64
	c := newCacheOn(t, cl.Client(t), func(ctx context.Context, k string) (string, error) {
		calls.Add(1)
		return "loaded-" + k, nil
	})
	ctx := testContext(t)
	keys := make([]string, 200)
	slots := map[int]bool{}
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
		slots[cl.Slot(keys[i])] = true
	}
	if len(slots) < 150 {
		t.Fatalf("200 keys cover only %d slots, want them spread", len(slots))
	}
	get := func(k, want string) {
		t.Helper()
		if v, err := c.Get(ctx, k); err != nil || v != want {
			t.Fatalf("Get(%q) = %q, %v, want %q, nil", k, v, err, want)
		}
	}
	for _, k := range keys {
		get(k, "loaded-"+k)
	}
	for _, k := range keys {
		get(k, "loaded-"+k)
	}
	if n := calls.Load(); n != 200 {
		t.Fatalf("loader calls after two rounds = %d, want 200", n)
	}
	for _, k := range keys[:100] {
		if err := c.Set(ctx, k, "set-"+k); err != nil {
			t.Fatalf("Set(%q): %v", k, err)
		}
	}
	for _, k := range keys[:100] {
		get(k, "set-"+k)
	}
	// One Invalidate over keys of many slots, then one per key.
	if err := c.Invalidate(ctx, keys[:150]...); err != nil {
		t.Fatalf("Invalidate(150 keys): %v", err)
	}
	for _, k := range keys[150:] {
		if err := c.Invalidate(ctx, k); err != nil {
			t.Fatalf("Invalidate(%q): %v", k, err)
		}
	}
	for _, k := range keys {
		get(k, "loaded-"+k)
	}
	st := c.Stats()
	if n := calls.Load(); n != 400 {
		t.Errorf("loader calls = %d, want 400 (200 cold + 200 after Invalidate)", n)
	}
	if st.RedisErrors != 0 || st.Hits != 300 {
		t.Errorf("Stats = %+v, want RedisErrors 0 and Hits 300", st)
	}
}

// TestClusterStampedeAcrossCaches: four caches, each with its own
// ClusterClient (four processes), 100 goroutines each on one cold key:
// the fill lock lets exactly one of them load.
func TestClusterStampedeAcrossCaches(t *testing.T) {
	cl := redistest.StartCluster(t)
	var calls atomic.Int64
	load := func(ctx context.Context, k string) (string, error) {
		calls.Add(1)
		time.Sleep(300 * time.Millisecond)
		return "v-" + k, nil
	}
	var caches []*cacheaside.Cache[string, string]
	for range 4 {
		caches = append(caches, newCacheOn(t, cl.Client(t), load))
	}
	ctx := testContext(t)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range caches {
		for range 100 {
			wg.Go(func() {
				<-start
				if v, err := c.Get(ctx, "hot"); err != nil || v != "v-hot" {
					t.Errorf("Get(hot) = %q, %v, want v-hot, nil", v, err)
				}
			})
		}
	}
	close(start)
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("loader calls = %d, want 1", n)
	}
	for i, c := range caches {
		if st := c.Stats(); st.RedisErrors != 0 {
			t.Errorf("cache %d: RedisErrors = %d, want 0 (%+v)", i, st.RedisErrors, st)
		}
	}
}

// TestClusterGetManyBatch: GetMany of 500 keys over many slots, 10% of
// which do not exist, makes one batch-loader call, returns every existing
// key, and answers a second GetMany from Redis alone.
func TestClusterGetManyBatch(t *testing.T) {
	cl := redistest.StartCluster(t)
	exists := func(k int) bool { return k%10 != 0 }
	var single, batches atomic.Int64
	batch := func(ctx context.Context, keys []int) (map[int]string, error) {
		batches.Add(1)
		out := make(map[int]string, len(keys))
		for _, k := range keys {
			if exists(k) {
				out[k] = faultValue(k)
			}
		}
		return out, nil
	}
	c := newCacheOn(t, cl.Client(t), func(ctx context.Context, k int) (string, error) {
		single.Add(1)
		return faultValue(k), nil
	}, cacheaside.WithBatchLoader(batch))
	ctx := testContext(t)
	// A first call loads the client's slot map, so that GetMany takes its
	// per-node paths: still one batch-loader call for all nodes.
	if err := c.Invalidate(ctx, -1); err != nil {
		t.Fatal(err)
	}
	keys := faultKeys(0, 499)
	check := func(round string) {
		t.Helper()
		got, err := c.GetMany(ctx, keys)
		if err != nil {
			t.Fatalf("%s GetMany: %v", round, err)
		}
		if len(got) != 450 {
			t.Errorf("%s GetMany returned %d keys, want 450", round, len(got))
		}
		for _, k := range keys {
			v, ok := got[k]
			if ok != exists(k) || (ok && v != faultValue(k)) {
				t.Errorf("%s GetMany[%d] = %q, %v, want present=%v", round, k, v, ok, exists(k))
			}
		}
	}
	check("cold")
	check("warm")
	st := c.Stats()
	if b, s := batches.Load(), single.Load(); b != 1 || s != 0 {
		t.Errorf("batch-loader calls = %d, single loads = %d, want 1, 0", b, s)
	}
	if st.RedisErrors != 0 {
		t.Errorf("RedisErrors = %d, want 0 (%+v)", st.RedisErrors, st)
	}
}

// TestClusterBreakerPerNode kills -9 the primary that owns half of the keys
// and reads all of them (Get and GetMany) until its breaker has opened and
// well after: the
// other nodes' keys must stay Redis hits (no load at all), because each
// node has its own breaker. With one breaker per cluster they would all
// go to the loader once it opened.
//
// The cluster serves the slots it still covers while the dead primary's
// replica takes over: with Redis's default cluster-require-full-coverage
// yes, every node answers CLUSTERDOWN for every key from the moment the
// primary is flagged failed until the promotion, a window that a busy
// machine widens (seen: 21 loads of live keys in CI). A CLUSTERDOWN reply
// is Redis refusing to serve, not a breaker's doing.
//
// The Redis timeout is 1s, not the default 100ms: a call to a live node
// that gets no reply within the timeout, with no other call to that node
// answered meanwhile, is a failure of that node by design (see
// WithRedisTimeout), and its key is loaded. The reads here are one at a
// time, so nothing else proves the node alive, and with two test suites
// on two cores a read or a GetMany's MGET took over 100ms while the
// process made no progress: live keys were loaded after calls abandoned
// at the timeout (Stats: Abandoned and RedisErrors up by one per load,
// RedisSkipped unchanged), while every live node's breaker stayed closed.
// The dead node fails its calls at once (its connections are refused),
// whatever the timeout, so its breaker still opens at once. What the test
// is about, that the dead node's breaker takes no call to another node,
// is asserted directly: no breaker but the dead node's ever leaves closed.
func TestClusterBreakerPerNode(t *testing.T) {
	cl := redistest.StartCluster(t)
	for _, addr := range cl.Addrs() {
		node := redis.NewClient(&redis.Options{Addr: addr})
		if err := node.ConfigSet(context.Background(), "cluster-require-full-coverage", "no").Err(); err != nil {
			t.Fatalf("CONFIG SET cluster-require-full-coverage no on %s: %v", addr, err)
		}
		_ = node.Close()
	}
	rdb := cl.Client(t)
	victim := cl.PrimaryFor("0")
	var onVictim, elsewhere []int
	for k := 0; len(onVictim) < 20 || len(elsewhere) < 20; k++ {
		if cl.PrimaryFor(strconv.Itoa(k)) == victim {
			if len(onVictim) < 20 {
				onVictim = append(onVictim, k)
			}
		} else if len(elsewhere) < 20 {
			elsewhere = append(elsewhere, k)
		}
	}
	var mu sync.Mutex
	loads := map[int]int{}
	opened := map[string]int{} // breaker changes away from closed, by node
	c := newFaultCache(t, rdb, func(ctx context.Context, k int) (string, error) {
		mu.Lock()
		loads[k]++
		mu.Unlock()
		return faultValue(k), nil
	}, cacheaside.WithBatchLoader(func(ctx context.Context, keys []int) (map[int]string, error) {
		out := make(map[int]string, len(keys))
		mu.Lock()
		defer mu.Unlock()
		for _, k := range keys {
			loads[k]++
			out[k] = faultValue(k)
		}
		return out, nil
	}), cacheaside.WithRedisTimeout(time.Second), cacheaside.WithCircuitBreaker(cacheaside.CircuitBreaker{
		OnChange: func(ch cacheaside.BreakerChange) {
			if ch.From == cacheaside.BreakerClosed {
				mu.Lock()
				opened[ch.Node]++
				mu.Unlock()
			}
		},
	}))
	all := append(append([]int(nil), onVictim...), elsewhere...)
	mustGetAll(t, c, all)
	mustGetAll(t, c, all) // hits now
	loadsOf := func(keys []int) (n int) {
		mu.Lock()
		defer mu.Unlock()
		for _, k := range keys {
			n += loads[k]
		}
		return n
	}
	base := c.Stats()
	baseVictim, baseElsewhere := loadsOf(onVictim), loadsOf(elsewhere)

	cl.KillPrimaryFor("0")
	t.Cleanup(func() {
		// Let go-redis's redial goroutine for the dead node see it again
		// before goleak looks (see clusterFailover).
		victim.Start()
		time.Sleep(1500 * time.Millisecond)
	})
	waitFor(t, 10*time.Second, "the dead node's breaker opens", func() bool {
		mustGetAll(t, c, all)
		return c.Stats().BreakerOpens > base.BreakerOpens
	})
	// Keep reading for a while with that breaker open (or half-open),
	// one key at a time and with GetMany.
	ctx := testContext(t)
	for range 20 {
		mustGetAll(t, c, all)
		got, err := c.GetMany(ctx, all)
		if err != nil || len(got) != len(all) {
			t.Fatalf("GetMany(%d keys) = %d values, %v; want all, nil", len(all), len(got), err)
		}
		for _, k := range all {
			if got[k] != faultValue(k) {
				t.Fatalf("GetMany[%d] = %q, want %q", k, got[k], faultValue(k))
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	st := c.Stats()
	mu.Lock()
	for node, n := range opened {
		if node != victim.Addr() {
			t.Errorf("the breaker of live node %s opened %d times, want never (only the dead node %s's)", node, n, victim.Addr())
		}
	}
	mu.Unlock()
	if n := loadsOf(elsewhere) - baseElsewhere; n != 0 {
		t.Errorf("keys on the live nodes were loaded %d times after another node died, want 0 (their node's breaker must stay closed); Stats %+v", n, st)
	}
	if n := loadsOf(onVictim) - baseVictim; n == 0 {
		t.Errorf("keys on the dead node were never loaded, want the loader to answer them")
	}
	if st.RedisSkipped == base.RedisSkipped {
		t.Errorf("RedisSkipped did not grow: the dead node's breaker never skipped a call")
	}
	t.Logf("after the kill: %d loads of the dead node's keys, %d of the others; BreakerOpens +%d, RedisSkipped +%d, breaker %s",
		loadsOf(onVictim)-baseVictim, loadsOf(elsewhere)-baseElsewhere, st.BreakerOpens-base.BreakerOpens, st.RedisSkipped-base.RedisSkipped, st.Breaker)
}

// countingClusterClient returns a ClusterClient of cl, closed when the test
// ends, and counts() of the commands or pipelines each node received.
func countingClusterClient(t *testing.T, cl *redistest.Cluster) (rdb *redis.ClusterClient, counts func() map[string]int64) {
	rdb = redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	t.Cleanup(func() { _ = rdb.Close() })
	var mu sync.Mutex
	perNode := map[string]*netCounter{}
	rdb.OnNewNode(func(node *redis.Client) {
		h := &netCounter{}
		mu.Lock()
		perNode[node.Options().Addr] = h
		mu.Unlock()
		node.AddHook(h)
	})
	counts = func() map[string]int64 {
		mu.Lock()
		defer mu.Unlock()
		out := map[string]int64{}
		for a, h := range perNode {
			out[a] = h.commands.Load()
		}
		return out
	}
	return rdb, counts
}

// TestClusterGetManyOneRoundTripPerNode counts what each node of the
// cluster receives for a GetMany of 300 warm keys spread over every node:
// exactly one pipeline (the per-slot MGETs) per node, and nothing else.
func TestClusterGetManyOneRoundTripPerNode(t *testing.T) {
	cl := redistest.StartCluster(t)
	rdb, counts := countingClusterClient(t, cl)
	batch := func(ctx context.Context, keys []int) (map[int]string, error) {
		out := make(map[int]string, len(keys))
		for _, k := range keys {
			out[k] = faultValue(k)
		}
		return out, nil
	}
	c := newCacheOn(t, rdb, func(ctx context.Context, k int) (string, error) { return faultValue(k), nil },
		cacheaside.WithBatchLoader(batch), cacheaside.WithRedisTimeout(time.Second))
	ctx := testContext(t)
	keys := faultKeys(0, 299)
	primaries := map[string]bool{}
	for _, k := range keys {
		primaries[cl.PrimaryFor(strconv.Itoa(k)).Addr()] = true
	}
	if len(primaries) != 3 {
		t.Fatalf("300 keys are on %d primaries, want all 3", len(primaries))
	}
	for round := range 2 { // cold, then warm
		got, err := c.GetMany(ctx, keys)
		if err != nil || len(got) != len(keys) {
			t.Fatalf("round %d: GetMany = %d values, %v", round, len(got), err)
		}
	}
	before := counts()
	got, err := c.GetMany(ctx, keys)
	if err != nil || len(got) != len(keys) {
		t.Fatalf("warm GetMany = %d values, %v", len(got), err)
	}
	after := counts()
	for addr := range primaries {
		if n := after[addr] - before[addr]; n != 1 {
			t.Errorf("primary %s received %d commands or pipelines for one warm GetMany, want 1", addr, n)
		}
	}
	for addr, n := range after {
		if !primaries[addr] && n != before[addr] {
			t.Errorf("node %s, which owns none of the keys, received %d commands", addr, n-before[addr])
		}
	}
	if st := c.Stats(); st.Hits < uint64(len(keys)) || st.RedisErrors != 0 {
		t.Errorf("Stats = %+v, want at least %d hits and no Redis error", st, len(keys))
	}
}

// TestUniversalClientTopologies builds the client with
// redis.NewUniversalClient, as services that switch topologies by
// configuration do: several addresses give a ClusterClient, a master name
// a Sentinel failover client. The cache must see through it (per-node
// breakers on the Cluster) and work without a Redis error on both.
func TestUniversalClientTopologies(t *testing.T) {
	cl := redistest.StartCluster(t)
	sn := redistest.StartSentinel(t)
	for _, tc := range []struct {
		name string
		opts *redis.UniversalOptions
	}{
		{"cluster", &redis.UniversalOptions{Addrs: cl.Addrs()}},
		{"sentinel", &redis.UniversalOptions{Addrs: sn.SentinelAddrs(), MasterName: sn.MasterName()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb := redis.NewUniversalClient(tc.opts)
			t.Cleanup(func() { _ = rdb.Close() })
			var calls atomic.Int64
			c := newFaultCache(t, rdb, func(ctx context.Context, k int) (string, error) {
				calls.Add(1)
				return faultValue(k), nil
			}, cacheaside.WithRedisTimeout(time.Second))
			ctx := testContext(t)
			keys := faultKeys(0, 49)
			mustGetAll(t, c, keys)
			mustGetAll(t, c, keys)
			if err := c.Set(ctx, 1, "set"); err != nil {
				t.Fatalf("Set: %v", err)
			}
			if err := c.Invalidate(ctx, keys[10:]...); err != nil {
				t.Fatalf("Invalidate(40 keys): %v", err)
			}
			got, err := c.GetMany(ctx, keys)
			if err != nil || len(got) != len(keys) || got[1] != "set" || got[20] != faultValue(20) {
				t.Fatalf("GetMany = %d values (1: %q, 20: %q), %v", len(got), got[1], got[20], err)
			}
			st := c.Stats()
			if n := calls.Load(); n != 90 || st.RedisErrors != 0 {
				t.Errorf("loader calls = %d, RedisErrors = %d; want 90 (50 cold + 40 invalidated), 0; Stats %+v", n, st.RedisErrors, st)
			}
		})
	}
}

// TestClusterBackplane runs the L1 invalidation backplane (pub/sub) over a
// Redis Cluster: an Invalidate on A drops B's L1 copy, although A and B
// may publish and subscribe through different nodes (Cluster pub/sub
// broadcasts over the cluster bus).
func TestClusterBackplane(t *testing.T) {
	cl := redistest.StartCluster(t)
	var version atomic.Int64
	version.Store(1)
	load := func(ctx context.Context, k string) (int64, error) { return version.Load(), nil }
	opts := []cacheaside.Option{cacheaside.WithLocalCache(100, time.Minute), cacheaside.WithLocalFirst(true)}
	a := newCacheOn(t, cl.Client(t), load, opts...)
	b := newCacheOn(t, cl.Client(t), load, opts...)
	ctx := testContext(t)
	for _, c := range []*cacheaside.Cache[string, int64]{a, b} {
		if v, err := c.Get(ctx, "k"); err != nil || v != 1 {
			t.Fatalf("Get(k) = %v, %v; want 1", v, err)
		}
	}
	// B trusts an L1 copy read once its subscription is confirmed, which
	// it may not have been at its first Get.
	waitFor(t, 10*time.Second, "B serves k from its L1", func() bool {
		if v, err := b.Get(ctx, "k"); err != nil || v != 1 {
			t.Fatalf("B's Get(k) = %v, %v; want 1", v, err)
		}
		return b.Stats().LocalHits > 0
	})
	version.Store(2)
	// B subscribes in the background after New: invalidate until one
	// message has reached it.
	waitFor(t, 10*time.Second, "B applies an invalidation published by A", func() bool {
		if err := a.Invalidate(ctx, "k"); err != nil {
			t.Fatalf("Invalidate(k) = %v", err)
		}
		time.Sleep(50 * time.Millisecond)
		return b.Stats().LocalInvalidations > 0
	})
	if v, err := b.Get(ctx, "k"); err != nil || v != 2 {
		t.Errorf("B's Get(k) after A's Invalidate reached it = %v, %v; want 2", v, err)
	}
	if n := a.Stats().LocalInvalidations; n != 0 {
		t.Errorf("A applied %d invalidations, want 0: its own messages are ignored", n)
	}
}
