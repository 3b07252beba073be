package cacheaside_test

import (
	"context"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// BenchmarkInvalidateSync measures what WithSyncInvalidation costs an
// Invalidate: its latency, p50 and p99 in microseconds, with 1, 4 and 16
// instances (each its own client and subscription, an L1, all
// subscribed), beside a plain Invalidate to the same fleet in the same
// run (from an instance without an L1). The synchronous instance is one
// of the n: it waits for its own subscription's confirmation too.
func BenchmarkInvalidateSync(b *testing.B) {
	srv := redistest.Start(b)
	_, load := versioned()
	ctx := context.Background()
	for _, n := range []int{1, 4, 16} {
		base := []cacheaside.Option{cacheaside.WithRedisTimeout(time.Second), cacheaside.WithL1(cacheaside.L1{Size: 100})}
		syncOpts := append(slices.Clone(base), cacheaside.WithSyncInvalidation(5*time.Second))
		// plain has no L1, hence no subscription: both cases publish to
		// the same n subscribers.
		plain, err := cacheaside.New(srv.Client(b), load, cacheaside.WithRedisTimeout(time.Second))
		if err != nil {
			b.Fatal(err)
		}
		fleet := []*cacheaside.Cache[string, int64]{plain}
		for range n {
			c, err := cacheaside.New(srv.Client(b), load, syncOpts...)
			if err != nil {
				b.Fatal(err)
			}
			fleet = append(fleet, c)
		}
		want := "[ca:invalidations " + strconv.Itoa(n) + "]"
		redistest.WaitFor(b, 10*time.Second, "every instance subscribed and leased", func() bool {
			return srv.CLI(b, "PUBSUB", "NUMSUB", "ca:invalidations") == want &&
				srv.CLI(b, "ZCARD", "{ca:invalidations}:live") == strconv.Itoa(n)
		})
		sync := fleet[1]
		for _, tc := range []struct {
			name string
			c    *cacheaside.Cache[string, int64]
		}{{"plain", plain}, {"sync", sync}} {
			b.Run(tc.name+"/instances="+strconv.Itoa(n), func(b *testing.B) {
				b.ReportAllocs()
				var took []time.Duration
				for b.Loop() {
					start := time.Now()
					if err := tc.c.Invalidate(ctx, "k"); err != nil {
						b.Fatal(err)
					}
					took = append(took, time.Since(start))
				}
				slices.Sort(took)
				b.ReportMetric(float64(took[len(took)/2])/1e3, "p50-µs")
				b.ReportMetric(float64(took[len(took)*99/100])/1e3, "p99-µs")
			})
		}
		for _, c := range fleet {
			_ = c.Close()
		}
	}
}
