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

// The cold-start tests build Caches the way a fleet of freshly started
// processes has them: each over a new go-redis client that has not dialled
// yet, with default client options and the default Redis timeout (not the
// 5s the protocol tests use, see redisTimeout). Then every caller is
// released at once on cold keys. The first Redis calls of each Cache dial
// while hundreds of goroutines start, and on a loaded machine under -race
// they can take longer than the Redis timeout: that is a busy process, not
// a Redis outage, and must not make any flight load without the fill lock.

// coldInstances is how many Caches (processes) share the cold keys.
const coldInstances = 4

// coldClient is a kind of fresh go-redis client the cold-start tests use.
type coldClient struct {
	name string
	new  func(t *testing.T) redis.UniversalClient
}

// coldClients returns the client kinds for a single server: default
// options (calls abandoned at the Redis timeout) and ContextTimeoutEnabled
// (calls bounded by a context deadline on the caller's goroutine).
func coldClients(srv *redistest.Server) []coldClient {
	return []coldClient{
		{"client=default", func(t *testing.T) redis.UniversalClient {
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			t.Cleanup(func() { _ = rdb.Close() })
			return rdb
		}},
		{"client=ContextTimeoutEnabled", func(t *testing.T) redis.UniversalClient {
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
			t.Cleanup(func() { _ = rdb.Close() })
			return rdb
		}},
	}
}

// coldClusterClients is coldClients for a Redis Cluster.
func coldClusterClients(cl *redistest.Cluster) []coldClient {
	return []coldClient{
		{"client=default", func(t *testing.T) redis.UniversalClient {
			rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
			t.Cleanup(func() { _ = rdb.Close() })
			return rdb
		}},
		{"client=ContextTimeoutEnabled", func(t *testing.T) redis.UniversalClient {
			rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), ContextTimeoutEnabled: true})
			t.Cleanup(func() { _ = rdb.Close() })
			return rdb
		}},
	}
}

// coldStampede builds coldInstances Caches with default options, each over
// a fresh client from newClient, and releases perKey callers of each of
// keys at once (spread evenly over the Caches). Every Get must return the
// key's value, the loader must run once per key, and no breaker may open:
// Redis is healthy throughout.
func coldStampede(t *testing.T, newClient func(t *testing.T) redis.UniversalClient, keys []string, perKey int) {
	t.Helper()
	loads := make(map[string]*atomic.Int64, len(keys))
	for _, k := range keys {
		loads[k] = new(atomic.Int64)
	}
	load := func(ctx context.Context, k string) (string, error) {
		loads[k].Add(1)
		time.Sleep(50 * time.Millisecond)
		return "value of " + k, nil
	}
	caches := make([]*cacheaside.Cache[string, string], coldInstances)
	for i := range caches {
		c, err := cacheaside.New(newClient(t), load) // the default Redis timeout
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		t.Cleanup(func() { _ = c.Close() }) // before the client closes
		caches[i] = c
	}

	ctx := testContext(t)
	stalled := redistest.ProbeStalls(t, newClient(t), stallLimit)
	var gets []func()
	var failed atomic.Int64
	for _, k := range keys {
		for i := range perKey {
			c := caches[i%coldInstances]
			gets = append(gets, func() {
				if v, err := c.Get(ctx, k); err != nil || v != "value of "+k {
					if failed.Add(1) <= 5 {
						t.Errorf("Get(%q) = %q, %v; want %q, nil", k, v, err, "value of "+k)
					}
				}
			})
		}
	}
	atOnce(gets)

	total := summed(caches)
	stall := stalled().Slowest
	t.Logf("%d cold keys x %d callers on %d fresh Caches: %d loads, %d Redis calls slow, %d Redis errors, %d skipped, %d breaker opens, %d lock waits run out; a probe's slowest reply %v",
		len(keys), perKey, coldInstances, total.Loads, total.RedisSlow, total.RedisErrors, total.RedisSkipped, total.BreakerOpens, total.LockWaitTimeouts, stall)
	if stall >= stallLimit || total.RedisErrors > 0 {
		// Redis itself gave no reply for about a Redis timeout (see
		// stallLimit), or the guard judged a call failed (a busy machine:
		// a call cut at the budget while its node answered nothing): a
		// failing Redis (WithRedisTimeout), which a flight may load
		// around, once per Cache at most. Without either, exactly one
		// load per key (below).
		t.Logf("a probe waited %v for a reply (half the Redis timeout %v or more is a stall), %d Redis errors: checking at most one load per key per Cache", stall, defaultRedisTimeout, total.RedisErrors)
		for _, k := range keys {
			if n := loads[k].Load(); n < 1 || n > coldInstances {
				t.Errorf("key %s loaded %d times by %d Caches while Redis stalled, want 1 to %d", k, n, coldInstances, coldInstances)
			}
		}
		return
	}
	var extra []string
	for _, k := range keys {
		if n := loads[k].Load(); n != 1 {
			extra = append(extra, k+": "+strconv.FormatInt(n, 10))
		}
	}
	if len(extra) > 0 {
		t.Errorf("%d cold keys x %d callers on %d fresh Caches made %d loads, want %d (one per key); keys loaded other than once: %v",
			len(keys), perKey, coldInstances, total.Loads, len(keys), extra)
	}
	if total.BreakerOpens != 0 {
		t.Errorf("summed Stats().BreakerOpens = %d on a healthy Redis, want 0", total.BreakerOpens)
	}
}

// atOnce runs gets, each on a goroutine of its own, released together
// once every goroutine has started, and waits for them all.
func atOnce(gets []func()) {
	start := make(chan struct{})
	var ready, wg sync.WaitGroup
	for _, get := range gets {
		ready.Add(1)
		wg.Go(func() {
			ready.Done()
			<-start
			get()
		})
	}
	ready.Wait()
	close(start)
	wg.Wait()
}

// summed adds up the Stats counters of caches that tell how their Redis
// calls and loads went.
func summed[K comparable, V any](caches []*cacheaside.Cache[K, V]) cacheaside.Stats {
	var total cacheaside.Stats
	for _, c := range caches {
		s := c.Stats()
		total.Loads += s.Loads
		total.RedisErrors += s.RedisErrors
		total.RedisSlow += s.RedisSlow
		total.RedisSkipped += s.RedisSkipped
		total.BreakerOpens += s.BreakerOpens
		total.LockAcquired += s.LockAcquired
		total.LockWaitTimeouts += s.LockWaitTimeouts
	}
	return total
}

// coldKeys returns the keys cold-0 .. cold-(n-1).
func coldKeys(n int) []string {
	ks := make([]string, n)
	for i := range ks {
		ks[i] = "cold-" + strconv.Itoa(i)
	}
	return ks
}

// TestColdStartLoadsOnce: 1,000 callers of one cold key on four fresh
// Caches make one load.
func TestColdStartLoadsOnce(t *testing.T) {
	srv := redistest.Start(t)
	for _, cc := range coldClients(srv) {
		t.Run(cc.name, func(t *testing.T) {
			coldStampede(t, cc.new, []string{"cold-" + cc.name}, 1000)
		})
	}
}

// TestColdStartLoadsOncePerKey: 20 cold keys with 100 callers each on four
// fresh Caches make 20 loads.
func TestColdStartLoadsOncePerKey(t *testing.T) {
	srv := redistest.Start(t)
	for i, cc := range coldClients(srv) {
		t.Run(cc.name, func(t *testing.T) {
			ks := coldKeys(20)
			for j := range ks {
				ks[j] += "-" + strconv.Itoa(i)
			}
			coldStampede(t, cc.new, ks, 100)
		})
	}
}

// TestColdStartLoadsOnceCluster is TestColdStartLoadsOnce and
// TestColdStartLoadsOncePerKey on a 3+3 Redis Cluster, whose fresh clients
// also load the slot map on their first call.
func TestColdStartLoadsOnceCluster(t *testing.T) {
	cl := redistest.StartCluster(t)
	for i, cc := range coldClusterClients(cl) {
		t.Run(cc.name, func(t *testing.T) {
			t.Run("keys=1", func(t *testing.T) {
				coldStampede(t, cc.new, []string{"cold-one-" + strconv.Itoa(i)}, 1000)
			})
			t.Run("keys=20", func(t *testing.T) {
				ks := coldKeys(20)
				for j := range ks {
					ks[j] += "-" + strconv.Itoa(i)
				}
				coldStampede(t, cc.new, ks, 100)
			})
		})
	}
}

// defaultRedisTimeout is WithRedisTimeout's default, which the cold-start
// and pool tests keep.
const defaultRedisTimeout = 100 * time.Millisecond

// stallLimit is the slowest probe reply at which the cold-start and pool
// tests take Redis itself for stalled. Half the Redis timeout, not all of
// it: a probe sent every 5ms sees only the part of a stall after it was
// sent, and the guard judges a whole window of silence that this
// process's own scheduling lengthens (seen: a probe's slowest reply 90ms,
// and one call judged failing, in CI).
const stallLimit = defaultRedisTimeout / 2
