package cacheaside_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// BenchmarkGetLocal measures Get answered from the in-process cache
// (WithLocalCache and WithLocalFirst) on warm keys, many distinct keys in
// parallel: the path of hot keys, which never reaches Redis. Compare with
// BenchmarkGetHit; BenchmarkLocalPut and BenchmarkLocalGet measure the
// L1 alone.
func BenchmarkGetLocal(b *testing.B) {
	srv := redistest.Start(b)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer rdb.Close()
	cache, err := cacheaside.New(rdb, benchLoad, cacheaside.WithTTL(time.Hour),
		cacheaside.WithLocalCache(benchKeys, time.Hour), cacheaside.WithLocalFirst(true))
	if err != nil {
		b.Fatal(err)
	}
	defer cache.Close()
	ctx := context.Background()
	warmLocal(b, cache, benchKeys)
	before := cache.Stats()
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := next.Add(7919)
		for pb.Next() {
			id = (id + 1) % benchKeys
			if p, err := cache.Get(ctx, id); err != nil || p.ID != id {
				b.Errorf("Get(%d) = %v, %v", id, p.ID, err)
				return
			}
		}
	})
	b.StopTimer()
	s := cache.Stats()
	b.ReportMetric(float64(s.LocalHits-before.LocalHits)/float64(b.N), "l1-hits/op")
}
