package cacheaside_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// BenchmarkGetMany reads 100 warm keys per op: with GetMany (one MGET),
// with 100 single Gets, and with a raw MGET + JSON decode of the same
// values. It reports ns per key.
func BenchmarkGetMany(b *testing.B) {
	srv := redistest.Start(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	defer rdb.Close()
	ctx := context.Background()
	cache, err := cacheaside.New(rdb, benchLoad, cacheaside.WithTTL(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	defer cache.Close()
	const perOp = 100
	ids := make([]int64, benchKeys)
	pipe := rdb.Pipeline()
	for i := range ids {
		ids[i] = int64(i)
		if err := cache.Set(ctx, ids[i], newBenchProduct(ids[i])); err != nil {
			b.Fatal(err)
		}
		v, _ := json.Marshal(newBenchProduct(ids[i]))
		pipe.Set(ctx, rawKey(ids[i]), v, time.Hour)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		b.Fatal(err)
	}
	batch := func(i int) []int64 { start := (i * perOp) % (benchKeys - perOp); return ids[start : start+perOp] }
	perKey := func(b *testing.B) {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*perOp), "ns/key")
	}
	b.Run("impl=getmany", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			got, err := cache.GetMany(ctx, batch(i))
			if err != nil || len(got) != perOp {
				b.Fatalf("GetMany = %d values, %v", len(got), err)
			}
			i++
		}
		perKey(b)
	})
	b.Run("impl=gets", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			for _, id := range batch(i) {
				if _, err := cache.Get(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
			i++
		}
		perKey(b)
	})
	b.Run("impl=raw-mget", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		keys := make([]string, perOp)
		for b.Loop() {
			for j, id := range batch(i) {
				keys[j] = rawKey(id)
			}
			vals, err := rdb.MGet(ctx, keys...).Result()
			if err != nil {
				b.Fatal(err)
			}
			out := make(map[int64]benchProduct, perOp)
			for _, v := range vals {
				var p benchProduct
				if err := json.Unmarshal([]byte(v.(string)), &p); err != nil {
					b.Fatal(err)
				}
				out[p.ID] = p
			}
			i++
		}
		perKey(b)
	})
}

// BenchmarkExpiryStorm writes 10,000 keys that expire together, then
// reads each once at an open-loop rate of 5,000 Gets/s (as requests keep
// arriving whether or not earlier ones finished) against a database that
// serves 8 queries at a time at 5 ms each: 1,600 queries/s, a third of the
// misses. stale=on uses WithStaleIfError, WithSoftTimeout(20ms) and
// WithMaxConcurrentLoads(8); stale=off is the plain cache, whose queue of
// misses grows for as long as the storm lasts. It reports the p99 and max
// Get latency. Run with -benchtime 1x.
func BenchmarkExpiryStorm(b *testing.B) {
	for _, stale := range []bool{false, true} {
		name := "stale=off"
		if stale {
			name = "stale=on"
		}
		b.Run(name, func(b *testing.B) {
			srv := redistest.Start(b)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true, PoolSize: 64})
			defer rdb.Close()
			db := make(chan struct{}, 8)
			load := func(ctx context.Context, id int64) (benchProduct, error) {
				select {
				case db <- struct{}{}:
				case <-ctx.Done():
					return benchProduct{}, ctx.Err()
				}
				defer func() { <-db }()
				time.Sleep(5 * time.Millisecond)
				return newBenchProduct(id), nil
			}
			const ttl = 2 * time.Second
			opts := []cacheaside.Option{cacheaside.WithTTL(ttl), cacheaside.WithJitter(0), cacheaside.WithLoadTimeout(10 * time.Second)}
			if stale {
				opts = append(opts, cacheaside.WithStaleIfError(time.Minute), cacheaside.WithSoftTimeout(20*time.Millisecond),
					cacheaside.WithMaxConcurrentLoads(8)) // as many loads as the database has connections
			}
			cache, err := cacheaside.New(rdb, load, opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer cache.Close()
			ctx := context.Background()
			const keys = 10_000
			var lat []time.Duration
			for b.Loop() {
				for id := range int64(keys) {
					if err := cache.Set(ctx, id, newBenchProduct(id)); err != nil {
						b.Fatal(err)
					}
				}
				time.Sleep(ttl + 100*time.Millisecond) // all expire together
				var mu sync.Mutex
				var wg sync.WaitGroup
				const rate = 5000 // Gets per second
				begin := time.Now()
				for id := range int64(keys) {
					if d := time.Until(begin.Add(time.Duration(id) * time.Second / rate)); d > 0 {
						time.Sleep(d)
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						start := time.Now()
						if _, err := cache.Get(ctx, id); err != nil {
							b.Error(err)
							return
						}
						d := time.Since(start)
						mu.Lock()
						lat = append(lat, d)
						mu.Unlock()
					}()
				}
				wg.Wait()
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
			b.ReportMetric(float64(cache.Stats().StaleServed), "stale-served")
		})
	}
}
