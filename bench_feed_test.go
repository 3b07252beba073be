package cacheaside_test

import (
	"context"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/l1"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// BenchmarkInvalidationDelivery measures how long an invalidation takes
// to reach another instance's L1: from the return of the call that sent
// it to the receiving Cache's count of applied invalidations moving. The
// "feed" case is Invalidate (the stream script: XADD and PUBLISH of the
// entry's ID, in one call); the "pubsub" case, the baseline, is the v0.2
// path: a bare PUBLISH of the same message, received by the same
// subscription. It reports p50 and p99 in microseconds.
func BenchmarkInvalidationDelivery(b *testing.B) {
	srv := redistest.Start(b)
	_, load := versioned()
	opts := []cacheaside.Option{cacheaside.WithRedisTimeout(time.Second), cacheaside.WithL1(cacheaside.L1{Size: 100})}
	a, err := cacheaside.New(srv.Client(b), load, opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	rb := srv.Client(b)
	recv, err := cacheaside.New(rb, load, opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer recv.Close()
	pub := srv.Client(b)
	ctx := context.Background()
	waitDelivered := func(before uint64) {
		for recv.Stats().LocalInvalidations == before {
			runtime.Gosched() // leave the CPU to the receiving goroutine
		}
	}
	// Wait until recv is subscribed: an invalidation reaches it.
	deadline := time.Now().Add(10 * time.Second)
	for before := recv.Stats().LocalInvalidations; recv.Stats().LocalInvalidations == before; {
		if time.Now().After(deadline) {
			b.Fatal("the receiving Cache never subscribed")
		}
		_ = a.Invalidate(ctx, "probe")
		time.Sleep(10 * time.Millisecond)
	}
	send := map[string]func() error{
		"feed": func() error { return a.Invalidate(ctx, "k") },
		"pubsub": func() error {
			return pub.Publish(ctx, "ca:invalidations", l1.Encode("other-process.", []string{"ca:{k}"})).Err()
		},
	}
	for _, name := range []string{"pubsub", "feed"} {
		b.Run(name, func(b *testing.B) {
			var took []time.Duration
			for b.Loop() {
				before := recv.Stats().LocalInvalidations
				if err := send[name](); err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				waitDelivered(before)
				took = append(took, time.Since(start))
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2])/1e3, "p50-µs")
			b.ReportMetric(float64(took[len(took)*99/100])/1e3, "p99-µs")
		})
	}
}
