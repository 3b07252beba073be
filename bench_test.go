package cacheaside_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/maypok86/otter/v2"
	"github.com/redis/go-redis/v9"
)

// The hit-path benchmarks compare a Get that hits Redis with what a
// hand-written cache-aside read costs: a plain go-redis GET of the same
// value plus the same JSON decode, on the same client and server. Run them
// interleaved and compare with benchstat:
//
//	go test -run '^$' -bench 'GetHit|RawRedisGet' -count 10 . | tee hit.txt
//	benchstat -col /impl hit.txt   (see the README for the exact commands)

const benchKeys = 10_000

// benchProduct is a value of a realistic size (about 200 bytes of JSON).
type benchProduct struct {
	ID          int64    `json:"id"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	PriceCents  int64    `json:"price_cents"`
	Tags        []string `json:"tags"`
}

func newBenchProduct(id int64) benchProduct {
	return benchProduct{
		ID:          id,
		Name:        "product " + strconv.FormatInt(id, 10),
		Description: "a sturdy, well-made product that ships in two days",
		PriceCents:  1000 + id%9000,
		Tags:        []string{"kitchen", "steel", "bestseller"},
	}
}

// benchClients are the client setups users have: go-redis defaults, and
// ContextTimeoutEnabled, with which the cache can enforce its Redis timeout
// without a goroutine per call; and go-redis defaults with the cache's
// WithTimeoutClone, which gets the same without the client option (the raw
// benchmarks run it as a plain default client, the same-run baseline).
var benchClients = []struct {
	name  string
	opts  func(addr string) *redis.Options
	cache []cacheaside.Option // what the cache adds for this setup
}{
	{"client=default", func(addr string) *redis.Options { return &redis.Options{Addr: addr} }, nil},
	{"client=ctxtimeout", func(addr string) *redis.Options {
		return &redis.Options{Addr: addr, ContextTimeoutEnabled: true}
	}, nil},
	// A default client, with the cache's calls through a timeout clone.
	{"client=default-clone", func(addr string) *redis.Options { return &redis.Options{Addr: addr} },
		[]cacheaside.Option{cacheaside.WithTimeoutClone(true)}},
}

func benchLoad(ctx context.Context, id int64) (benchProduct, error) { return newBenchProduct(id), nil }

// benchGoroutines are the concurrencies of the hit-path benchmarks: one
// caller (latency), and 16 and 64 callers reading at once (throughput).
var benchGoroutines = []int{1, 16, 64}

// BenchmarkGetHit measures Get on warm keys, uniformly random among
// benchKeys, from a fixed number of goroutines. Compare with
// BenchmarkRawRedisGet (same names after impl=).
func BenchmarkGetHit(b *testing.B) {
	srv := redistest.Start(b)
	warmCache(b, srv.Client(b))
	for _, bc := range benchClients {
		for _, g := range benchGoroutines {
			b.Run(fmt.Sprintf("impl=cacheaside/%s/goroutines=%d", bc.name, g), func(b *testing.B) {
				rdb := redis.NewClient(bc.opts(srv.Addr()))
				defer rdb.Close()
				benchHitCache(b, rdb, g, bc.cache...)
			})
		}
	}
}

// warmCache stores the benchKeys values with a Cache over rdb, under the
// default prefix, where benchHitCache reads them. Its Redis timeout is
// long: on a loaded machine a Set past the default 100ms failed the whole
// benchmark before it measured anything.
func warmCache(b *testing.B, rdb redis.UniversalClient) {
	cache, err := cacheaside.New(rdb, benchLoad, cacheaside.WithTTL(time.Hour), cacheaside.WithRedisTimeout(5*time.Second))
	if err != nil {
		b.Fatal(err)
	}
	defer cache.Close()
	ctx := context.Background()
	for id := range int64(benchKeys) {
		if err := cache.Set(ctx, id, newBenchProduct(id)); err != nil {
			b.Fatal(err)
		}
	}
}

// benchHitCache runs the hit-path benchmark of a Cache over rdb, made with
// opts, on the benchKeys keys warmCache stored, from g goroutines, and
// returns its Stats afterwards.
func benchHitCache(b *testing.B, rdb redis.UniversalClient, g int, opts ...cacheaside.Option) cacheaside.Stats {
	cache, err := cacheaside.New(rdb, benchLoad, append([]cacheaside.Option{cacheaside.WithTTL(time.Hour)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	defer cache.Close()
	ctx := context.Background()
	onGoroutines(b, g, func(rnd *rand.Rand) error {
		id := rnd.Int64N(benchKeys)
		p, err := cache.Get(ctx, id)
		if err != nil || p.ID != id {
			return fmt.Errorf("Get(%d) = %v, %v", id, p.ID, err)
		}
		return nil
	})
	s := cache.Stats()
	if s.Loads != 0 {
		b.Errorf("Loads = %d during a warm benchmark, want 0", s.Loads)
	}
	return s
}

// onGoroutines runs b.N calls of op spread over exactly g goroutines (not
// RunParallel, whose goroutine count is a multiple of GOMAXPROCS), each
// with its own random source. It reports allocations, the process's CPU
// time per op (user and system: what a call costs this process, not
// Redis), and the p50 and p99 latency of op.
func onGoroutines(b *testing.B, g int, op func(rnd *rand.Rand) error) {
	b.Helper()
	var next atomic.Int64
	lat := make([]time.Duration, b.N)
	var wg sync.WaitGroup
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for w := range g {
		rnd := rand.New(rand.NewPCG(uint64(w), uint64(time.Now().UnixNano())))
		wg.Go(func() {
			for i := next.Add(1) - 1; i < int64(b.N); i = next.Add(1) - 1 {
				t0 := time.Now()
				if err := op(rnd); err != nil {
					b.Error(err)
					return
				}
				lat[i] = time.Since(t0)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	cpu := cpuTime() - cpu0
	all := lat
	slices.Sort(all)
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N)/1000, "cpu-µs/op")
	b.ReportMetric(float64(all[len(all)/2].Nanoseconds())/1000, "p50-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Nanoseconds())/1000, "p99-µs")
}

// cpuTime returns the user and system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRawRedisGet is the baseline of BenchmarkGetHit: GET and
// json.Unmarshal of the same values, keys built the same way. impl=raw
// sends the GET under the caller's context as it is; impl=raw-timeout
// gives it the cache's default Redis timeout with context.WithTimeout, as a
// careful hand-written read does (with a default client go-redis then
// still ignores the deadline on the socket read).
func BenchmarkRawRedisGet(b *testing.B) {
	srv := redistest.Start(b)
	warmRaw(b, srv.Client(b))
	for _, impl := range []string{"raw", "raw-timeout"} {
		for _, bc := range benchClients {
			for _, g := range benchGoroutines {
				b.Run(fmt.Sprintf("impl=%s/%s/goroutines=%d", impl, bc.name, g), func(b *testing.B) {
					rdb := redis.NewClient(bc.opts(srv.Addr()))
					defer rdb.Close()
					benchRaw(b, rdb, g, impl == "raw-timeout")
				})
			}
		}
	}
}

// warmRaw stores the benchKeys values as plain JSON, where benchRaw reads
// them.
func warmRaw(b *testing.B, rdb redis.UniversalClient) {
	ctx := context.Background()
	pipe := rdb.Pipeline()
	for id := range int64(benchKeys) {
		v, _ := json.Marshal(newBenchProduct(id))
		pipe.Set(ctx, rawKey(id), v, time.Hour)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.Fatal(err)
	}
}

// benchRaw runs the hit-path baseline over rdb from g goroutines: GET and
// json.Unmarshal of the benchKeys values warmRaw stored, the GET under a
// 100ms context.WithTimeout if timeout.
func benchRaw(b *testing.B, rdb redis.UniversalClient, g int, timeout bool) {
	ctx := context.Background()
	onGoroutines(b, g, func(rnd *rand.Rand) error {
		id := rnd.Int64N(benchKeys)
		rctx, cancel := ctx, context.CancelFunc(func() {})
		if timeout {
			rctx, cancel = context.WithTimeout(ctx, 100*time.Millisecond)
		}
		raw, err := rdb.Get(rctx, rawKey(id)).Bytes()
		cancel()
		var p benchProduct
		if err == nil {
			err = json.Unmarshal(raw, &p)
		}
		if err != nil || p.ID != id {
			return fmt.Errorf("GET %d = %v, %v", id, p.ID, err)
		}
		return nil
	})
}

func rawKey(id int64) string { return "raw:{" + strconv.FormatInt(id, 10) + "}" }

// BenchmarkGetHotKey has 64 goroutines read one warm key. Concurrent Gets
// of one key share one Redis GET in flight, so a hot key costs Redis far
// less than one command per Get; impl=raw is the same load as plain GETs.
// impl=cacheaside-l1 reads the in-process cache first (WithLocalCache,
// WithLocalFirst), beside impl=otter, a Get on an otter cache that holds
// the decoded value: the best an in-process tier can do; impl=otter-ttl
// is that otter with string keys and a TTL, like the L1.
func BenchmarkGetHotKey(b *testing.B) {
	const goroutines = 64
	srv := redistest.Start(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	b.Run("impl=raw", func(b *testing.B) {
		v, _ := json.Marshal(newBenchProduct(1))
		if err := rdb.Set(ctx, rawKey(1), v, time.Hour).Err(); err != nil {
			b.Fatal(err)
		}
		onGoroutines(b, goroutines, func(*rand.Rand) error {
			raw, err := rdb.Get(ctx, rawKey(1)).Bytes()
			var p benchProduct
			if err == nil {
				err = json.Unmarshal(raw, &p)
			}
			return err
		})
	})
	b.Run("impl=cacheaside", func(b *testing.B) {
		cache, err := cacheaside.New(rdb, benchLoad, cacheaside.WithTTL(time.Hour))
		if err != nil {
			b.Fatal(err)
		}
		defer cache.Close()
		if err := cache.Set(ctx, 1, newBenchProduct(1)); err != nil {
			b.Fatal(err)
		}
		srv.CLI(b, "CONFIG", "RESETSTAT")
		onGoroutines(b, goroutines, func(*rand.Rand) error {
			_, err := cache.Get(ctx, 1)
			return err
		})
		b.ReportMetric(float64(redisReads(b, srv))/float64(b.N), "redis-gets/op")
	})
	b.Run("impl=cacheaside-l1", func(b *testing.B) {
		cache, err := cacheaside.New(rdb, benchLoad, cacheaside.WithTTL(time.Hour),
			cacheaside.WithLocalCache(1000, time.Hour), cacheaside.WithLocalFirst(true))
		if err != nil {
			b.Fatal(err)
		}
		defer cache.Close()
		if err := cache.Set(ctx, 1, newBenchProduct(1)); err != nil {
			b.Fatal(err)
		}
		warmLocal(b, cache, 1)
		before := cache.Stats().LocalHits
		onGoroutines(b, goroutines, func(*rand.Rand) error {
			_, err := cache.Get(ctx, 1)
			return err
		})
		b.ReportMetric(float64(cache.Stats().LocalHits-before)/float64(b.N), "l1-hits/op")
	})
	b.Run("impl=otter", func(b *testing.B) {
		oc := otter.Must(&otter.Options[int64, benchProduct]{MaximumSize: 1000})
		oc.Set(1, newBenchProduct(1))
		onGoroutines(b, goroutines, func(*rand.Rand) error {
			if _, ok := oc.GetIfPresent(1); !ok {
				return errors.New("otter: key 1 missing")
			}
			return nil
		})
	})
	// An otter that holds what an L1 holds: string keys and a TTL, which
	// costs otter a clock read per Get (a tier with a TTL has to read the
	// clock, and the L1 reads it once per hit).
	b.Run("impl=otter-ttl", func(b *testing.B) {
		oc := otter.Must(&otter.Options[string, benchProduct]{
			MaximumSize: 1000, ExpiryCalculator: otter.ExpiryWriting[string, benchProduct](time.Hour),
		})
		defer oc.StopAllGoroutines() // its expiry's clean-up goroutine
		oc.Set("ca:{1}", newBenchProduct(1))
		onGoroutines(b, goroutines, func(*rand.Rand) error {
			if _, ok := oc.GetIfPresent("ca:{1}"); !ok {
				return errors.New("otter: key ca:{1} missing")
			}
			return nil
		})
	})
}

// warmLocal reads ids through cache until a whole round is answered from
// its L1: copies are trusted once read under a confirmed subscription.
func warmLocal(b *testing.B, cache *cacheaside.Cache[int64, benchProduct], n int64) {
	ctx := context.Background()
	deadline := time.Now().Add(10 * time.Second)
	for round := 0; ; round++ {
		before := cache.Stats().LocalHits
		for id := range n {
			if _, err := cache.Get(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
		if cache.Stats().LocalHits-before == uint64(n) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("round %d of Gets of %d keys: %d answered from L1, want all", round, n, cache.Stats().LocalHits-before)
		}
	}
}

// BenchmarkStampede has 4 Cache instances, each with its own client, and
// 64 goroutines on each Get one cold key at once; the loader takes 10 ms.
// It reports loads per stampede (1 is the goal) and how long after the
// loader returned the waiters on the other instances got the value.
func BenchmarkStampede(b *testing.B) {
	srv := redistest.Start(b)
	const instances, perInstance = 4, 64
	var (
		loads   atomic.Int64
		loadEnd atomic.Int64 // UnixNano when the last load returned
	)
	load := func(ctx context.Context, id int64) (benchProduct, error) {
		loads.Add(1)
		time.Sleep(10 * time.Millisecond)
		loadEnd.Store(time.Now().UnixNano())
		return newBenchProduct(id), nil
	}
	prefix := fmt.Sprintf("stampede%d:", time.Now().UnixNano())
	caches := make([]*cacheaside.Cache[int64, benchProduct], instances)
	var landed fillClock // when the holder's write of the value returned
	for i := range caches {
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), PoolSize: perInstance})
		rdb.AddHook(&landed)
		defer rdb.Close()
		c, err := cacheaside.New(rdb, load, cacheaside.WithPrefix(prefix))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		caches[i] = c
	}
	ctx := context.Background()
	var lags, afterWrite []time.Duration
	var gots []int64 // when each Get of a round returned
	var mu sync.Mutex
	b.ReportAllocs()
	b.ResetTimer()
	key := int64(0)
	for b.Loop() {
		key++
		start := make(chan struct{})
		var wg sync.WaitGroup
		for _, c := range caches {
			for range perInstance {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					if _, err := c.Get(ctx, key); err != nil {
						b.Error(err)
					}
					got := time.Now().UnixNano()
					mu.Lock()
					gots = append(gots, got)
					mu.Unlock()
				}()
			}
		}
		close(start)
		wg.Wait()
		// A waiter on another instance may read the value before the
		// holder's client has seen the reply to its write: take the times
		// once every Get of this round has returned.
		for _, got := range gots {
			lags = append(lags, time.Duration(got-loadEnd.Load()))
			afterWrite = append(afterWrite, time.Duration(max(0, got-landed.at.Load())))
		}
		gots = gots[:0]
	}
	b.StopTimer()
	slices.Sort(lags)
	b.ReportMetric(float64(loads.Load())/float64(b.N), "loads/op")
	b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "p50-lag-ms")
	b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds())/1000, "p99-lag-ms")
	b.ReportMetric(float64(lags[len(lags)-1].Microseconds())/1000, "max-lag-ms")
	slices.Sort(afterWrite)
	b.ReportMetric(float64(afterWrite[len(afterWrite)/2].Microseconds())/1000, "p50-after-write-ms")
	b.ReportMetric(float64(afterWrite[len(afterWrite)*99/100].Microseconds())/1000, "p99-after-write-ms")
}

// fillClock is a go-redis hook that records when a fill script call (the
// holder's conditional write of the loaded value: EVALSHA or EVAL with the
// value, lock and generation keys and 5 arguments, replying with an
// integer, where the acquire script replies with an array) returned 1,
// written under the lock. The waiters' lag is measured from that moment: the value
// has landed in Redis.
type fillClock struct{ at atomic.Int64 }

func (*fillClock) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *fillClock) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if name := cmd.Name(); (name == "evalsha" || name == "eval") && len(cmd.Args()) == 11 {
			if c, ok := cmd.(*redis.Cmd); ok {
				if n, _ := c.Int64(); n == 1 {
					h.at.Store(time.Now().UnixNano())
				}
			}
		}
		return err
	}
}

func (*fillClock) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}
