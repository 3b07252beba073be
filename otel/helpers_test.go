package cacheotel_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/cacheaside/cacheaside/internal/testlog"
	cacheotel "github.com/cacheaside/cacheaside/otel"
	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(testlog.M(m)) }

// cacheName is the name every test gives its cache.
const cacheName = "products"

type product struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

var errDatabase = errors.New("database unavailable")

// loadProduct knows product 1, says 2 does not exist and fails for 3.
func loadProduct(_ context.Context, id int64) (product, error) {
	switch id {
	case 1:
		return product{ID: 1, Name: "teapot"}, nil
	case 3:
		return product{}, errDatabase
	}
	return product{}, fmt.Errorf("product %d: %w", id, cacheaside.ErrNotFound)
}

// rig is a Cache on a redis-server of its own, whose loader is wrapped by
// WrapLoader and whose metrics and spans are recorded in memory.
type rig struct {
	cache  *cacheaside.Cache[int64, product]
	reader *sdkmetric.ManualReader
	meters *sdkmetric.MeterProvider
	spans  *tracetest.SpanRecorder
	tracer *sdktrace.TracerProvider
}

// newRig builds a rig around load. Everything it starts is stopped when t
// ends.
func newRig(t *testing.T, load cacheaside.LoadFunc[int64, product], opts ...cacheaside.Option) *rig {
	t.Helper()
	testlog.Attach(t)
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })

	r := &rig{reader: sdkmetric.NewManualReader(), spans: tracetest.NewSpanRecorder()}
	r.meters = sdkmetric.NewMeterProvider(sdkmetric.WithReader(r.reader))
	r.tracer = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(r.spans))
	t.Cleanup(func() {
		ctx := context.Background()
		if err := r.meters.Shutdown(ctx); err != nil {
			t.Errorf("MeterProvider.Shutdown() = %v", err)
		}
		if err := r.tracer.Shutdown(ctx); err != nil {
			t.Errorf("TracerProvider.Shutdown() = %v", err)
		}
	})

	otelOpts := []cacheotel.Option{
		cacheotel.WithMeterProvider(r.meters),
		cacheotel.WithTracerProvider(r.tracer),
		cacheotel.WithName(cacheName),
	}
	rdb.AddHook(cacheotel.RedisHook(otelOpts...))
	wrapped := cacheotel.WrapLoader(load, otelOpts...)
	// 1s instead of the default 100ms: the tests count spans and loads, and
	// with two test suites at once a call past 100ms failed open (a load
	// span for a hit). A test's own WithRedisTimeout comes later and wins.
	opts = append([]cacheaside.Option{cacheaside.WithGetHook(cacheotel.GetHook(otelOpts...)), cacheaside.WithRedisTimeout(time.Second)}, opts...)
	c, err := cacheaside.New(rdb, wrapped, opts...)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	r.cache = c

	reg, err := cacheotel.RegisterMetrics(r.meters.Meter("test"), cacheName, c)
	if err != nil {
		t.Fatalf("RegisterMetrics() = %v", err)
	}
	t.Cleanup(func() { _ = reg.Unregister() })
	return r
}

// collect reads every metric from reader.
func collect(t *testing.T, reader *sdkmetric.ManualReader) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatalf("Collect() = %v", err)
	}
	return rm
}

// find returns the metric called name, if it was collected.
func find(rm metricdata.ResourceMetrics, name string) (metricdata.Metrics, bool) {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

// int64Value returns the value of the one data point of the Int64 sum or
// gauge called name whose attributes are exactly attrs.
func int64Value(t *testing.T, rm metricdata.ResourceMetrics, name string, attrs attribute.Set) (int64, bool) {
	t.Helper()
	m, ok := find(rm, name)
	if !ok {
		return 0, false
	}
	var points []metricdata.DataPoint[int64]
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		if !d.IsMonotonic || d.Temporality != metricdata.CumulativeTemporality {
			t.Errorf("%s: monotonic %v, temporality %v; want a cumulative counter", name, d.IsMonotonic, d.Temporality)
		}
		points = d.DataPoints
	case metricdata.Gauge[int64]:
		points = d.DataPoints
	default:
		t.Fatalf("%s has data of type %T, want an Int64 sum or gauge", name, m.Data)
	}
	for _, p := range points {
		if p.Attributes.Equals(&attrs) {
			return p.Value, true
		}
	}
	return 0, false
}

// histogramCounts returns the count of each data point of the histogram
// called name, keyed by its outcome attribute.
func histogramCounts(t *testing.T, rm metricdata.ResourceMetrics, name string) map[string]uint64 {
	t.Helper()
	return histogramCountsBy(t, rm, name, "outcome")
}

// histogramCountsBy returns the count of each data point of the histogram
// called name, keyed by the value of its attribute key.
func histogramCountsBy(t *testing.T, rm metricdata.ResourceMetrics, name, key string) map[string]uint64 {
	t.Helper()
	m, ok := find(rm, name)
	if !ok {
		t.Fatalf("metric %s was not collected", name)
	}
	h, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s has data of type %T, want a Float64 histogram", name, m.Data)
	}
	if m.Unit != "s" {
		t.Errorf("%s has unit %q, want \"s\"", name, m.Unit)
	}
	counts := map[string]uint64{}
	for _, p := range h.DataPoints {
		if v, ok := p.Attributes.Value("cache"); !ok || v.AsString() != cacheName {
			t.Errorf("%s point %v: cache attribute = %v, want %q", name, p.Attributes.ToSlice(), v.AsString(), cacheName)
		}
		v, _ := p.Attributes.Value(attribute.Key(key))
		counts[v.AsString()] += p.Count
	}
	return counts
}

// cacheAttrs is the attribute set every measurement of cacheName carries.
func cacheAttrs(name string) attribute.Set {
	return attribute.NewSet(attribute.String("cache", name))
}

// loadSpans returns the ended spans called cacheaside.load.
func loadSpans(r *rig) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range r.spans.Ended() {
		if s.Name() == "cacheaside.load" {
			out = append(out, s)
		}
	}
	return out
}

// spanAttr returns the string value of the attribute key of span s.
func spanAttr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.AsString()
		}
	}
	return ""
}
