package cacheotel_test

import (
	"context"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/cacheaside/cacheaside"
	cacheotel "github.com/cacheaside/cacheaside/otel"
	"github.com/redis/go-redis/v9"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// The example runs against an in-process fake Redis so that it needs
// nothing to run; the tests use a real redis-server. A service would use a
// periodic OTLP reader or the Prometheus exporter instead of the manual
// reader (see examples/httpserver).
func Example() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())

	// The loader records cacheaside.load.duration; pass
	// cacheotel.WithTracerProvider as well to get a span per load.
	load := cacheotel.WrapLoader(loadProduct,
		cacheotel.WithMeterProvider(mp), cacheotel.WithName("products"))
	cache, err := cacheaside.New(rdb, load, cacheaside.WithRedisTimeout(time.Second)) // counts must not vary on a busy machine
	if err != nil {
		panic(err)
	}
	defer cache.Close()
	reg, err := cacheotel.RegisterMetrics(mp.Meter(cacheotel.ScopeName), "products", cache.Stats)
	if err != nil {
		panic(err)
	}
	defer reg.Unregister()

	ctx := context.Background()
	cache.Get(ctx, 1) // a miss: one load
	cache.Get(ctx, 1) // a hit

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		panic(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				if m.Name == "cacheaside.hits" || m.Name == "cacheaside.misses" {
					fmt.Println(m.Name, d.DataPoints[0].Value)
				}
			case metricdata.Histogram[float64]:
				fmt.Println(m.Name, "count", d.DataPoints[0].Count)
			}
		}
	}
	// Output:
	// cacheaside.load.duration count 1
	// cacheaside.hits 1
	// cacheaside.misses 1
}
