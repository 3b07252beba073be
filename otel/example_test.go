package cacheotel_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
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
	// The Get hook counts Gets by result and times them. (The Redis
	// timeout is raised so that the output holds on a loaded test machine.)
	cache, err := cacheaside.New(rdb, load, cacheaside.WithRedisTimeout(time.Second),
		cacheaside.WithGetHook(cacheotel.GetHook(cacheotel.WithMeterProvider(mp), cacheotel.WithName("products"))))
	if err != nil {
		panic(err)
	}
	defer cache.Close()
	reg, err := cacheotel.RegisterMetrics(mp.Meter(cacheotel.ScopeName), "products", cache)
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
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				if m.Name == "cacheaside.requests" || m.Name == "cacheaside.loads" {
					for _, p := range d.DataPoints {
						res, _ := p.Attributes.Value("result")
						lines = append(lines, fmt.Sprintf("%s{%s} %d", m.Name, res.AsString(), p.Value))
					}
				}
			case metricdata.Histogram[float64]:
				var n uint64
				for _, p := range d.DataPoints {
					n += p.Count
				}
				lines = append(lines, fmt.Sprintf("%s count %d", m.Name, n))
			}
		}
	}
	slices.Sort(lines)
	fmt.Println(strings.Join(lines, "\n"))
	// Output:
	// cacheaside.get.duration count 2
	// cacheaside.load.duration count 1
	// cacheaside.loads{} 1
	// cacheaside.requests{hit} 1
	// cacheaside.requests{miss} 1
}
