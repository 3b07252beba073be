package cacheaside_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// BenchmarkLoneGetPaired measures a lone Get's latency against the raw
// GET + json.Unmarshal as a paired comparison: one goroutine, one client,
// one connection, one redis-server, and each op a pair of calls (a Get of
// a random warm key and a raw GET of another), the pair's order
// alternating from op to op. Whatever else the machine does lands on both
// sides alike, so the ratio of the two p50s holds on a loaded machine,
// where two separate benchmarks (BenchmarkGetHit and BenchmarkRawRedisGet,
// each with its own server, warm-up and moment) spread from 0.35x to 1.28x.
//
//	go test -run '^$' -bench LoneGetPaired -benchtime 20000x -count 10 . | tee lone.txt
//	benchstat -col /client lone.txt
//
// It reports p50-ratio and p90-ratio (the Get's percentile over the raw
// GET's), each side's p50 and p90 in µs, and sec/op for the pair.
// client=ctxtimeout is a ContextTimeoutEnabled client, on which a Get's
// Redis call runs on the caller's goroutine under the budget;
// client=default is a default-options client.
func BenchmarkLoneGetPaired(b *testing.B) {
	addr := os.Getenv("CACHEASIDE_BENCH_REDIS")
	if addr == "" {
		addr = redistest.Start(b).Addr()
	}
	const keys = 1000
	prefix := fmt.Sprintf("lone%d:", time.Now().UnixNano())
	for _, bc := range benchClients[:2] {
		b.Run(bc.name, func(b *testing.B) {
			rdb := redis.NewClient(bc.opts(addr))
			defer rdb.Close()
			ctx := context.Background()
			cache, err := cacheaside.New(rdb, benchLoad, cacheaside.WithTTL(time.Hour), cacheaside.WithPrefix(prefix))
			if err != nil {
				b.Fatal(err)
			}
			defer cache.Close()
			pipe := rdb.Pipeline()
			for id := range int64(keys) {
				v, _ := json.Marshal(newBenchProduct(id))
				pipe.Set(ctx, prefix+rawKey(id), v, time.Hour)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				b.Fatal(err)
			}
			warm, err := cacheaside.New(rdb, benchLoad, cacheaside.WithTTL(time.Hour), cacheaside.WithPrefix(prefix),
				cacheaside.WithRedisTimeout(5*time.Second))
			if err != nil {
				b.Fatal(err)
			}
			for id := range int64(keys) {
				if err := warm.Set(ctx, id, newBenchProduct(id)); err != nil {
					b.Fatal(err)
				}
			}
			warm.Close()

			get := func(id int64) time.Duration {
				t0 := time.Now()
				p, err := cache.Get(ctx, id)
				d := time.Since(t0)
				if err != nil || p.ID != id {
					b.Fatalf("Get(%d) = %d, %v", id, p.ID, err)
				}
				return d
			}
			raw := func(id int64) time.Duration {
				t0 := time.Now()
				v, err := rdb.Get(ctx, prefix+rawKey(id)).Bytes()
				var p benchProduct
				if err == nil {
					err = json.Unmarshal(v, &p)
				}
				d := time.Since(t0)
				if err != nil || p.ID != id {
					b.Fatalf("GET %d = %d, %v", id, p.ID, err)
				}
				return d
			}
			rnd := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
			var getLat, rawLat []time.Duration
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				g, r := rnd.Int64N(keys), rnd.Int64N(keys)
				if i%2 == 0 {
					getLat = append(getLat, get(g))
					rawLat = append(rawLat, raw(r))
				} else {
					rawLat = append(rawLat, raw(r))
					getLat = append(getLat, get(g))
				}
			}
			b.StopTimer()
			slices.Sort(getLat)
			slices.Sort(rawLat)
			q := func(l []time.Duration, p int) float64 { return float64(l[len(l)*p/100].Nanoseconds()) }
			b.ReportMetric(q(getLat, 50)/q(rawLat, 50), "p50-ratio")
			b.ReportMetric(q(getLat, 90)/q(rawLat, 90), "p90-ratio")
			b.ReportMetric(q(getLat, 50)/1000, "get-p50-µs")
			b.ReportMetric(q(rawLat, 50)/1000, "raw-p50-µs")
			b.ReportMetric(q(getLat, 90)/1000, "get-p90-µs")
			b.ReportMetric(q(rawLat, 90)/1000, "raw-p90-µs")
		})
	}
}
