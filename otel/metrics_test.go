package cacheotel_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/cacheaside/cacheaside"
	cacheotel "github.com/cacheaside/cacheaside/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
)

// statsMetrics maps each counter of cacheaside.Stats to the metric that
// must report it. It is written out here, apart from the package's own
// table, so that a wrong mapping there cannot pass.
func statsMetrics(s cacheaside.Stats) map[string]uint64 {
	return map[string]uint64{
		"cacheaside.hits":                    s.Hits,
		"cacheaside.local_hits":              s.LocalHits,
		"cacheaside.misses":                  s.Misses,
		"cacheaside.loads":                   s.Loads,
		"cacheaside.load.errors":             s.LoadErrors,
		"cacheaside.load.panics":             s.Panics,
		"cacheaside.lock.acquisitions":       s.LockAcquired,
		"cacheaside.lock.waits":              s.LockWaits,
		"cacheaside.lock.wait_timeouts":      s.LockWaitTimeouts,
		"cacheaside.fill.conflicts":          s.FillConflicts,
		"cacheaside.corrupt_entries":         s.Corrupt,
		"cacheaside.redis.errors":            s.RedisErrors,
		"cacheaside.redis.skipped":           s.RedisSkipped,
		"cacheaside.redis.slow":              s.RedisSlow,
		"cacheaside.redis.abandoned":         s.Abandoned,
		"cacheaside.breaker.opens":           s.BreakerOpens,
		"cacheaside.warmup.keys":             s.Warmed,
		"cacheaside.warmup.runs":             s.WarmUps,
		"cacheaside.restarts_detected":       s.RestartsDetected,
		"cacheaside.early_refreshes":         s.EarlyRefreshes,
		"cacheaside.early_refreshes.skipped": s.RefreshesSkipped,
		"cacheaside.local.invalidations":     s.LocalInvalidations,
		"cacheaside.stale_served":            s.StaleServed,
	}
}

// TestStatsFieldsAllExported fails when a counter is added to
// cacheaside.Stats without a metric here.
func TestStatsFieldsAllExported(t *testing.T) {
	var counters int
	typ := reflect.TypeFor[cacheaside.Stats]()
	for f := range typ.Fields() {
		if f.Type.Kind() == reflect.Uint64 {
			counters++
		}
	}
	if got := len(statsMetrics(cacheaside.Stats{})); got != counters {
		t.Errorf("statsMetrics has %d metrics, want one per uint64 field of cacheaside.Stats (%d)", got, counters)
	}
}

// TestMetricsMatchStats runs a miss, a hit, a not-found answer (loaded,
// then cached) and a loader error against a real redis-server, and checks
// that every collected counter equals its Stats field and that the load
// histogram counted each load once, by outcome.
func TestMetricsMatchStats(t *testing.T) {
	r := newRig(t, loadProduct)
	ctx := context.Background()

	for i, want := range []string{"teapot", "teapot"} { // a miss, then a hit
		if p, err := r.cache.Get(ctx, 1); err != nil || p.Name != want {
			t.Fatalf("Get(1) #%d = %+v, %v, want %s, nil", i+1, p, err, want)
		}
	}
	for i := range 2 { // loaded, then answered by the cached "not found"
		if _, err := r.cache.Get(ctx, 2); !errors.Is(err, cacheaside.ErrNotFound) {
			t.Fatalf("Get(2) #%d error = %v, want ErrNotFound", i+1, err)
		}
	}
	if _, err := r.cache.Get(ctx, 3); !errors.Is(err, errDatabase) {
		t.Fatalf("Get(3) error = %v, want %v", err, errDatabase)
	}

	s := r.cache.Stats()
	if s.Hits != 2 || s.Misses != 3 || s.Loads != 3 || s.LoadErrors != 1 {
		t.Fatalf("Stats() = %+v, want 2 hits, 3 misses, 3 loads, 1 load error", s)
	}
	rm := collect(t, r.reader)
	attrs := cacheAttrs(cacheName)
	for name, want := range statsMetrics(s) {
		got, ok := int64Value(t, rm, name, attrs)
		if !ok {
			t.Errorf("%s{cache=%s} was not collected", name, cacheName)
			continue
		}
		if got != int64(want) {
			t.Errorf("%s = %d, want %d (from Stats)", name, got, want)
		}
	}
	if got, ok := int64Value(t, rm, "cacheaside.breaker.state", attrs); !ok || got != 0 {
		t.Errorf("cacheaside.breaker.state = %d (collected %v), want 0 (closed)", got, ok)
	}

	counts := histogramCounts(t, rm, "cacheaside.load.duration")
	var total uint64
	for _, n := range counts {
		total += n
	}
	if total != s.Loads {
		t.Errorf("cacheaside.load.duration count = %d, want Stats().Loads = %d", total, s.Loads)
	}
	want := map[string]uint64{"ok": 1, "not_found": 1, "error": 1}
	if !reflect.DeepEqual(counts, want) {
		t.Errorf("cacheaside.load.duration counts by outcome = %v, want %v", counts, want)
	}
}

// TestBreakerStateGauge checks the value reported for each breaker state.
func TestBreakerStateGauge(t *testing.T) {
	for _, tc := range []struct {
		state cacheaside.BreakerState
		want  int64
		ok    bool
	}{
		{cacheaside.BreakerClosed, 0, true},
		{cacheaside.BreakerHalfOpen, 1, true},
		{cacheaside.BreakerOpen, 2, true},
		{cacheaside.BreakerDisabled, -1, true},
		{cacheaside.BreakerState("unknown"), 0, false},
	} {
		t.Run(string(tc.state), func(t *testing.T) {
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			defer func() { _ = mp.Shutdown(context.Background()) }()
			stats := func() cacheaside.Stats { return cacheaside.Stats{Breaker: tc.state} }
			if _, err := cacheotel.RegisterMetrics(mp.Meter("test"), "c", stats); err != nil {
				t.Fatalf("RegisterMetrics() = %v", err)
			}
			got, ok := int64Value(t, collect(t, reader), "cacheaside.breaker.state", cacheAttrs("c"))
			if got != tc.want || ok != tc.ok {
				t.Errorf("breaker state %q reported as %d (present %v), want %d (present %v)", tc.state, got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestRegisterMetricsSeveralCaches registers two caches on one meter and
// an unnamed one, and checks that each reports under its own attributes.
func TestRegisterMetricsSeveralCaches(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	meter := mp.Meter("test")
	for name, hits := range map[string]uint64{"a": 1, "b": 2, "": 3} {
		stats := func() cacheaside.Stats { return cacheaside.Stats{Hits: hits} }
		if _, err := cacheotel.RegisterMetrics(meter, name, stats); err != nil {
			t.Fatalf("RegisterMetrics(%q) = %v", name, err)
		}
	}
	rm := collect(t, reader)
	for _, tc := range []struct {
		attrs attribute.Set
		want  int64
	}{{cacheAttrs("a"), 1}, {cacheAttrs("b"), 2}, {attribute.NewSet(), 3}} {
		if got, ok := int64Value(t, rm, "cacheaside.hits", tc.attrs); !ok || got != tc.want {
			t.Errorf("cacheaside.hits%v = %d (present %v), want %d", tc.attrs.ToSlice(), got, ok, tc.want)
		}
	}
}

// TestUnregister checks that a cache stops being reported once its
// registration is removed.
func TestUnregister(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	reg, err := cacheotel.RegisterMetrics(mp.Meter("test"), "c", func() cacheaside.Stats { return cacheaside.Stats{Hits: 5} })
	if err != nil {
		t.Fatalf("RegisterMetrics() = %v", err)
	}
	if got, ok := int64Value(t, collect(t, reader), "cacheaside.hits", cacheAttrs("c")); !ok || got != 5 {
		t.Fatalf("cacheaside.hits = %d (present %v) before Unregister, want 5", got, ok)
	}
	if err := reg.Unregister(); err != nil {
		t.Fatalf("Unregister() = %v", err)
	}
	if got, ok := int64Value(t, collect(t, reader), "cacheaside.hits", cacheAttrs("c")); ok {
		t.Errorf("cacheaside.hits = %d after Unregister, want no data point", got)
	}
}

func TestRegisterMetricsNilArguments(t *testing.T) {
	_, err := cacheotel.RegisterMetrics(nil, "c", nil)
	if err == nil {
		t.Fatal("RegisterMetrics(nil, \"c\", nil) = nil error, want one")
	}
	for _, want := range []string{"nil meter", "nil stats function"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("RegisterMetrics(nil, \"c\", nil) = %q, want it to mention %q", err, want)
		}
	}
}
