package cacheaside_test

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
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

// BenchmarkGetHit measures Get on warm keys, many distinct keys in
// parallel. Compare with BenchmarkRawRedisGet.
func BenchmarkGetHit(b *testing.B) {
	srv := redistest.Start(b)
	for _, bc := range benchClients {
		b.Run("impl=cacheaside/"+bc.name, func(b *testing.B) {
			rdb := redis.NewClient(bc.opts(srv.Addr()))
			defer rdb.Close()
			benchHitCache(b, rdb, bc.cache...)
		})
	}
}

// benchHitCache runs the hit-path benchmark of a Cache over rdb, made with
// opts, on benchKeys warm keys, and returns its Stats afterwards.
func benchHitCache(b *testing.B, rdb redis.UniversalClient, opts ...cacheaside.Option) cacheaside.Stats {
	cache, err := cacheaside.New(rdb, benchLoad, append([]cacheaside.Option{cacheaside.WithTTL(time.Hour)}, opts...)...)
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
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := next.Add(7919)
		for pb.Next() {
			id = (id + 1) % benchKeys
			p, err := cache.Get(ctx, id)
			if err != nil || p.ID != id {
				b.Errorf("Get(%d) = %v, %v", id, p.ID, err)
				return
			}
		}
	})
	b.StopTimer()
	s := cache.Stats()
	if s.Loads != 0 {
		b.Errorf("Loads = %d during a warm benchmark, want 0", s.Loads)
	}
	return s
}

// BenchmarkRawRedisGet is the baseline of BenchmarkGetHit: GET and
// json.Unmarshal of the same values, keys built the same way. impl=raw
// sends the GET under the caller's context as it is; impl=raw-timeout
// gives it the cache's default Redis timeout with context.WithTimeout, as a
// careful hand-written read does (with a default client go-redis then
// still ignores the deadline on the socket read).
func BenchmarkRawRedisGet(b *testing.B) {
	srv := redistest.Start(b)
	for _, impl := range []string{"raw", "raw-timeout"} {
		for _, bc := range benchClients {
			b.Run("impl="+impl+"/"+bc.name, func(b *testing.B) {
				rdb := redis.NewClient(bc.opts(srv.Addr()))
				defer rdb.Close()
				benchRaw(b, rdb, impl == "raw-timeout")
			})
		}
	}
}

// benchRaw runs the hit-path baseline over rdb: GET and json.Unmarshal of
// benchKeys values, the GET under a 100ms context.WithTimeout if timeout.
func benchRaw(b *testing.B, rdb redis.UniversalClient, timeout bool) {
	ctx := context.Background()
	pipe := rdb.Pipeline()
	for id := range int64(benchKeys) {
		v, _ := json.Marshal(newBenchProduct(id))
		pipe.Set(ctx, rawKey(id), v, time.Hour)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.Fatal(err)
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := next.Add(7919)
		for pb.Next() {
			id = (id + 1) % benchKeys
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
				b.Errorf("GET %d = %v, %v", id, p.ID, err)
				return
			}
		}
	})
}

func rawKey(id int64) string { return "raw:{" + strconv.FormatInt(id, 10) + "}" }

// BenchmarkGetHotKey has 64 goroutines read one warm key. Concurrent Gets
// of one key share one Redis GET in flight, so a hot key costs Redis far
// less than one command per Get; impl=raw is the same load as plain GETs.
func BenchmarkGetHotKey(b *testing.B) {
	srv := redistest.Start(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	par := max(1, 64/benchProcs())

	b.Run("impl=raw", func(b *testing.B) {
		v, _ := json.Marshal(newBenchProduct(1))
		if err := rdb.Set(ctx, rawKey(1), v, time.Hour).Err(); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		b.SetParallelism(par)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				raw, err := rdb.Get(ctx, rawKey(1)).Bytes()
				var p benchProduct
				if err == nil {
					err = json.Unmarshal(raw, &p)
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
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
		b.ReportAllocs()
		b.SetParallelism(par)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := cache.Get(ctx, 1); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(redisCommands(b, srv, "get"))/float64(b.N), "redis-gets/op")
	})
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

func benchProcs() int { return runtime.GOMAXPROCS(0) }
