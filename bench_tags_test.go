package cacheaside_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// BenchmarkGetTagged is the hit path of tagged values beside untagged
// ones, in the same run (issue 16: at most 1.10x): tags=0 is the untagged
// baseline; tags=3 values carry three tags with nothing invalidated since
// their load (the clock as they left it: no tag check); tags=3/after-other
// after an InvalidateTag of a tag they do not carry (their tags' versions
// are read once, then looked up in the process). 16 goroutines, warm keys
// uniformly random among benchKeys, a ContextTimeoutEnabled client.
//
//	go test -run '^$' -bench 'GetTagged' -count 10 . | tee tagged.txt
//	benchstat -col /tags tagged.txt
func BenchmarkGetTagged(b *testing.B) {
	srv := redistest.Start(b)
	for i, tt := range []struct {
		name  string
		tags  []string
		other bool // InvalidateTag of another tag after the warm-up
	}{
		{"tags=0", nil, false},
		{"tags=3", []string{"tenant:7", "category:kitchen", "brand:steel"}, false},
		{"tags=3/after-other", []string{"tenant:7", "category:kitchen", "brand:steel"}, true},
	} {
		b.Run(tt.name+"/goroutines=16", func(b *testing.B) {
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
			defer rdb.Close()
			load := func(ctx context.Context, id int64) (benchProduct, error) {
				cacheaside.Tag(ctx, tt.tags...)
				return newBenchProduct(id), nil
			}
			prefix := fmt.Sprintf("bt%d:", i)
			cache, err := cacheaside.New(rdb, load, cacheaside.WithTTL(time.Hour), cacheaside.WithPrefix(prefix))
			if err != nil {
				b.Fatal(err)
			}
			defer cache.Close()
			ctx := context.Background()
			for id := range int64(benchKeys) {
				if _, err := cache.Get(ctx, id); err != nil {
					b.Fatal(err)
				}
			}
			if tt.other {
				if err := cache.InvalidateTag(ctx, "tenant:8"); err != nil {
					b.Fatal(err)
				}
			}
			loads := cache.Stats().Loads
			onGoroutines(b, 16, func(rnd *rand.Rand) error {
				id := rnd.Int64N(benchKeys)
				p, err := cache.Get(ctx, id)
				if err != nil || p.ID != id {
					return fmt.Errorf("Get(%d) = %v, %v", id, p.ID, err)
				}
				return nil
			})
			if n := cache.Stats().Loads - loads; n != 0 {
				b.Errorf("Loads = %d during a warm benchmark, want 0", n)
			}
		})
	}
}

// BenchmarkFillTagged is the miss path (read, fill lock, load, check
// before the fill, fill) of tagged values beside untagged ones: tags=0
// checks the clock before its fill with one MGET; tags=3 runs instead the
// script that reads the clock and the three tag keys and creates the
// missing ones (tagclock.CreateMissing). Each Get is of a key never read,
// by one goroutine; the loader returns at once.
//
//	go test -run '^$' -bench 'FillTagged' -count 6 . | tee fill.txt
//	benchstat -col /tags fill.txt
func BenchmarkFillTagged(b *testing.B) {
	srv := redistest.Start(b)
	for i, tags := range [][]string{nil, {"tenant:7", "category:kitchen", "brand:steel"}} {
		b.Run(fmt.Sprintf("tags=%d", len(tags)), func(b *testing.B) {
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
			defer rdb.Close()
			load := func(ctx context.Context, id int64) (benchProduct, error) {
				cacheaside.Tag(ctx, tags...)
				return newBenchProduct(id), nil
			}
			prefix := fmt.Sprintf("bf%d:%d:", i, rand.Int64())
			cache, err := cacheaside.New(rdb, load, cacheaside.WithTTL(time.Minute), cacheaside.WithPrefix(prefix))
			if err != nil {
				b.Fatal(err)
			}
			defer cache.Close()
			ctx := context.Background()
			if _, err := cache.Get(ctx, -1); err != nil { // the prefix's clock
				b.Fatal(err)
			}
			loads := cache.Stats().Loads
			var id int64
			b.ReportAllocs()
			for b.Loop() {
				if p, err := cache.Get(ctx, id); err != nil || p.ID != id {
					b.Fatalf("Get(%d) = %v, %v", id, p.ID, err)
				}
				id++
			}
			b.ReportMetric(float64(cache.Stats().Loads-loads)/float64(id), "loads/op")
		})
	}
}
