package cacheaside_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/maypok86/otter/v2"
	"github.com/redis/go-redis/v9"
)

// BenchmarkHitInstructions runs each hit path on one goroutine, one call
// per op, for counting instructions with callgrind (on a loaded machine
// wall-clock time is noise; instructions are not):
//
//	go test -c -o /tmp/ca.test .
//	redis-server --port 16399 --save '' --appendonly no &   # valgrind cannot follow redis-server's fork
//	CACHEASIDE_BENCH_REDIS=127.0.0.1:16399 GODEBUG=asyncpreemptoff=1 \
//	  valgrind --tool=callgrind --callgrind-out-file=cg.out \
//	  /tmp/ca.test -test.run '^$' -test.bench 'HitInstructions/impl=l1$' -test.benchtime 100000x
//	callgrind_annotate --inclusive=yes cg.out | grep hitOnce
//
// Each op is a call of a hitOnce function (never inlined), so its
// inclusive instruction count divided by the ops is what one hit costs.
// With CACHEASIDE_BENCH_REDIS unset it starts its own redis-server.
// impl=l1 is a Get answered by the L1 read first (WithLocalCache,
// WithLocalFirst) beside impl=otter (the bare otter Get of
// BenchmarkGetHotKey) and impl=otter-ttl (string keys and a TTL);
// impl=get is a lone Get answered by Redis, beside impl=raw, a go-redis
// GET and json.Unmarshal of the same value on the same
// ContextTimeoutEnabled client.
func BenchmarkHitInstructions(b *testing.B) {
	addr := os.Getenv("CACHEASIDE_BENCH_REDIS")
	if addr == "" {
		addr = redistest.Start(b).Addr()
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, ContextTimeoutEnabled: true})
	defer rdb.Close()
	ctx := context.Background()
	// A prefix of its own: an outside server may hold an earlier run's keys.
	prefix := fmt.Sprintf("instr%d:", time.Now().UnixNano())
	want := newBenchProduct(1)

	b.Run("impl=l1", func(b *testing.B) {
		cache := instrCache(b, rdb, prefix, cacheaside.WithLocalCache(1000, time.Hour), cacheaside.WithLocalFirst(true))
		warmLocal(b, cache, 2)
		runInstr(b, func() error { return cacheHitOnce(ctx, cache) })
	})
	b.Run("impl=otter", func(b *testing.B) {
		oc := otter.Must(&otter.Options[int64, benchProduct]{MaximumSize: 1000})
		oc.Set(1, want)
		runInstr(b, func() error { return otterHitOnce(oc) })
	})
	b.Run("impl=otter-ttl", func(b *testing.B) {
		oc := otter.Must(&otter.Options[string, benchProduct]{
			MaximumSize: 1000, ExpiryCalculator: otter.ExpiryWriting[string, benchProduct](time.Hour),
		})
		defer oc.StopAllGoroutines()
		oc.Set(prefix+"{1}", want)
		runInstr(b, func() error { return otterTTLHitOnce(oc, prefix+"{1}") })
	})
	b.Run("impl=get", func(b *testing.B) {
		cache := instrCache(b, rdb, prefix)
		runInstr(b, func() error { return cacheHitOnce(ctx, cache) })
	})
	b.Run("impl=raw", func(b *testing.B) {
		v, _ := json.Marshal(want)
		if err := rdb.Set(ctx, prefix+"raw", v, time.Hour).Err(); err != nil {
			b.Fatal(err)
		}
		runInstr(b, func() error { return rawHitOnce(ctx, rdb, prefix+"raw") })
	})
}

// instrCache returns a Cache over rdb under prefix holding key 1, closed
// when b ends.
func instrCache(b *testing.B, rdb *redis.Client, prefix string, opts ...cacheaside.Option) *cacheaside.Cache[int64, benchProduct] {
	opts = append([]cacheaside.Option{cacheaside.WithTTL(time.Hour), cacheaside.WithPrefix(prefix),
		cacheaside.WithRedisTimeout(5 * time.Second)}, opts...)
	cache, err := cacheaside.New(rdb, benchLoad, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cache.Close() })
	if err := cache.Set(context.Background(), 1, newBenchProduct(1)); err != nil {
		b.Fatal(err)
	}
	return cache
}

// runInstr runs op b.N times on this goroutine.
func runInstr(b *testing.B, op func() error) {
	b.ReportAllocs()
	for b.Loop() {
		if err := op(); err != nil {
			b.Fatal(err)
		}
	}
}

//go:noinline
func cacheHitOnce(ctx context.Context, cache *cacheaside.Cache[int64, benchProduct]) error {
	p, err := cache.Get(ctx, 1)
	if err == nil && p.ID != 1 {
		err = fmt.Errorf("Get(1) = %d, want 1", p.ID)
	}
	return err
}

//go:noinline
func otterHitOnce(oc *otter.Cache[int64, benchProduct]) error {
	if _, ok := oc.GetIfPresent(1); !ok {
		return errors.New("otter: key 1 missing")
	}
	return nil
}

//go:noinline
func otterTTLHitOnce(oc *otter.Cache[string, benchProduct], key string) error {
	if _, ok := oc.GetIfPresent(key); !ok {
		return errors.New("otter: key missing")
	}
	return nil
}

//go:noinline
func rawHitOnce(ctx context.Context, rdb *redis.Client, key string) error {
	raw, err := rdb.Get(ctx, key).Bytes()
	var p benchProduct
	if err == nil {
		err = json.Unmarshal(raw, &p)
	}
	return err
}
