package cacheaside_test

import (
	"context"
	"errors"
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

// TestClusterPrimaryFailover kills -9 the primary owning the keys under
// load, with a ClusterClient with default options; see runFailover.
func TestClusterPrimaryFailover(t *testing.T) {
	cl := redistest.StartCluster(t)
	clusterFailover(t, cl, cl.Client(t))
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

func clusterFailover(t *testing.T, cl *redistest.Cluster, rdb *redis.ClusterClient) {
	t.Helper()
	// Pick 20 keys whose slots the same primary owns.
	victim := cl.PrimaryFor(strconv.Itoa(0))
	var keys []int
	for k := 0; len(keys) < 20; k++ {
		if cl.PrimaryFor(strconv.Itoa(k)) == victim {
			keys = append(keys, k)
		}
	}
	runFailover(t, rdb, keys, func() {
		if p := cl.KillPrimaryFor(strconv.Itoa(keys[0])); p != victim {
			t.Fatalf("killed %s, want %s", p.Addr(), victim.Addr())
		}
	})
	// go-redis keeps a goroutine per dead node that redials once a second
	// until the node answers or the client closes; bring the node back (it
	// rejoins as a replica) and give that goroutine one round to see it,
	// so that goleak does not catch it on its way out.
	victim.Start()
	time.Sleep(1500 * time.Millisecond)
}

// TestSentinelPrimaryFailover kills -9 the Sentinel-monitored primary under
// load; see runFailover.
func TestSentinelPrimaryFailover(t *testing.T) {
	s := redistest.StartSentinel(t)
	runFailover(t, s.Client(t), faultKeys(0, 19), func() { s.KillPrimary() })
}

// runFailover warms keys into a cache with default options over rdb, runs
// Gets of them from 8 goroutines, calls kill, and waits until the cache
// serves those keys from Redis again without loading: a full second with
// Redis hits and no loader call. Every Get must return the loader's value
// with a nil error throughout. It logs the degraded window (kill to the
// last loader call) and the loader calls it took.
func runFailover(t *testing.T, rdb redis.UniversalClient, keys []int, kill func()) {
	t.Helper()
	const (
		recoverWithin = 30 * time.Second
		quietFor      = time.Second
	)
	ld := &faultLoader{}
	c := newFaultCache(t, rdb, ld.load)
	mustGetAll(t, c, keys)
	waitFor(t, 10*time.Second, "warm keys are Redis hits", func() bool {
		before := c.Stats()
		mustGetAll(t, c, keys)
		after := c.Stats()
		return after.Loads == before.Loads && after.Hits-before.Hits == uint64(len(keys))
	})

	var (
		gets, errs atomic.Int64
		lastLoad   atomic.Int64 // UnixNano of the last Get that saw loads grow
		stop       = make(chan struct{})
		wg         sync.WaitGroup
		firstErr   atomic.Value
	)
	for w := range 8 {
		wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := keys[i%len(keys)]
				ctx, cancel := context.WithTimeout(context.Background(), faultGetTimeout)
				v, err := c.Get(ctx, k)
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
	defer func() {
		close(stop)
		wg.Wait()
	}()

	time.Sleep(300 * time.Millisecond) // steady state before the kill
	base := c.Stats()
	baseLoads := ld.calls.Load()
	killed := time.Now()
	kill()

	// Track the last moment loads grew; done when loads stayed flat for
	// quietFor while hits kept growing.
	lastLoad.Store(killed.UnixNano())
	prevLoads, prevHits, quietSince := baseLoads, base.Hits, time.Now()
	deadline := killed.Add(recoverWithin)
	for {
		time.Sleep(50 * time.Millisecond)
		now := time.Now()
		loads, hits := ld.calls.Load(), c.Stats().Hits
		if loads != prevLoads {
			lastLoad.Store(now.UnixNano())
			quietSince = now
		}
		if hits == prevHits {
			quietSince = now
		}
		prevLoads, prevHits = loads, hits
		if loads > baseLoads && now.Sub(quietSince) >= quietFor {
			break
		}
		if loads == baseLoads && now.Sub(killed) >= 5*time.Second {
			break // never degraded at all
		}
		if now.After(deadline) {
			st := c.Stats()
			gctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, gerr := rdb.Get(gctx, "ca:{"+strconv.Itoa(keys[0])+"}").Result()
			cancel()
			t.Fatalf("direct GET through the same client now: %v; cache did not return to Redis hits within %v of the kill: loader calls %d, Stats %+v", gerr, recoverWithin, loads-baseLoads, st)
		}
	}
	st := c.Stats()
	window := time.Unix(0, lastLoad.Load()).Sub(killed)
	t.Logf("degraded window (kill to last loader call): %v; loader calls during failover: %d; Gets: %d; errors: %d",
		window.Round(time.Millisecond), ld.calls.Load()-baseLoads, gets.Load(), errs.Load())
	t.Logf("stats delta: Hits +%d Misses +%d RedisErrors +%d RedisSkipped +%d Abandoned +%d BreakerOpens +%d LockAcquired +%d FillConflicts +%d RestartsDetected +%d; breaker %s",
		st.Hits-base.Hits, st.Misses-base.Misses, st.RedisErrors-base.RedisErrors, st.RedisSkipped-base.RedisSkipped,
		st.Abandoned-base.Abandoned, st.BreakerOpens-base.BreakerOpens, st.LockAcquired-base.LockAcquired,
		st.FillConflicts-base.FillConflicts, st.RestartsDetected-base.RestartsDetected, st.Breaker)
	if n := errs.Load(); n != 0 {
		t.Errorf("%d of %d Gets failed during the failover; first: %v", n, gets.Load(), firstErr.Load())
	}
}
