package cacheotel_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/cacheaside/cacheaside"
	cacheotel "github.com/cacheaside/cacheaside/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// statsMetrics maps each counter of cacheaside.Stats that RegisterMetrics
// exports to the metric that must report it. It is written out here, apart
// from the package's own table, so that a wrong mapping there cannot pass.
func statsMetrics(s cacheaside.Stats) map[string]uint64 {
	return map[string]uint64{
		"cacheaside.loads":               s.Loads,
		"cacheaside.load.panics":         s.Panics,
		"cacheaside.lock.acquisitions":   s.LockAcquired,
		"cacheaside.lock.waits":          s.LockWaits,
		"cacheaside.lock.wait.timeouts":  s.LockWaitTimeouts,
		"cacheaside.fill.conflicts":      s.FillConflicts,
		"cacheaside.entries.corrupt":     s.Corrupt,
		"cacheaside.redis.errors":        s.RedisErrors,
		"cacheaside.redis.skipped":       s.RedisSkipped,
		"cacheaside.redis.slow":          s.RedisSlow,
		"cacheaside.redis.abandoned":     s.Abandoned,
		"cacheaside.breaker.opens":       s.BreakerOpens,
		"cacheaside.warmup.keys":         s.Warmed,
		"cacheaside.warmup.runs":         s.WarmUps,
		"cacheaside.restarts.detected":   s.RestartsDetected,
		"cacheaside.refresh.runs":        s.EarlyRefreshes,
		"cacheaside.refresh.skipped":     s.RefreshesSkipped,
		"cacheaside.local.invalidations": s.LocalInvalidations,

		"cacheaside.invalidations.queued":   s.InvalidationsQueued,
		"cacheaside.invalidations.replayed": s.InvalidationsReplayed,
		"cacheaside.invalidations.dropped":  s.InvalidationsDropped,
		"cacheaside.invalidations.pending":  s.InvalidationsPending,
		"cacheaside.local.resumes":          s.LocalResumes,

		"cacheaside.audit.checks":      s.AuditChecks,
		"cacheaside.audit.stale":       s.AuditStale,
		"cacheaside.audit.dropped":     s.AuditDropped,
		"cacheaside.audit.errors":      s.AuditErrors,
		"cacheaside.local.feed_broken": s.LocalFeedBroken,
	}
}

// coveredElsewhere are the counters of cacheaside.Stats that other
// instruments report: cacheaside.requests by result (GetHook) and
// cacheaside.load.duration{outcome="error"} (WrapLoader).
var coveredElsewhere = []string{"Hits", "LocalHits", "Misses", "StaleServed", "LoadErrors"}

// TestStatsFieldsAllExported fails when a counter is added to
// cacheaside.Stats without a metric here.
func TestStatsFieldsAllExported(t *testing.T) {
	var counters int
	typ := reflect.TypeFor[cacheaside.Stats]()
	for f := range typ.Fields() {
		if f.Type.Kind() == reflect.Uint64 && !slices.Contains(coveredElsewhere, f.Name) {
			counters++
		}
	}
	if got := len(statsMetrics(cacheaside.Stats{})); got != counters {
		t.Errorf("statsMetrics has %d metrics, want one per uint64 field of cacheaside.Stats not in %v (%d)", got, coveredElsewhere, counters)
	}
}

// TestMetricsMatchStats runs a miss, a hit, a not-found answer (loaded,
// then cached) and a loader error against a real redis-server, and checks
// that every collected counter equals its Stats field, that the load
// histogram counted each load once, by outcome, that cacheaside.requests
// and cacheaside.get.duration counted each Get once, by result, and that
// cacheaside.redis.duration saw the cache's commands.
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
	closed := attribute.NewSet(attribute.String("cache", cacheName), attribute.String("state", "closed"))
	if got, ok := int64Value(t, rm, "cacheaside.breaker.state", closed); !ok || got != 1 {
		t.Errorf("cacheaside.breaker.state{state=closed} = %d (collected %v), want 1", got, ok)
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

	// Miss, hit, miss (not found, loaded), hit (cached not found), error.
	wantGets := map[string]uint64{"hit": 2, "miss": 2, "error": 1}
	for res, n := range wantGets {
		set := attribute.NewSet(attribute.String("cache", cacheName), attribute.String("result", res))
		if got, ok := int64Value(t, rm, "cacheaside.requests", set); !ok || got != int64(n) {
			t.Errorf("cacheaside.requests{result=%s} = %d (collected %v), want %d", res, got, ok, n)
		}
	}
	if got := histogramCountsBy(t, rm, "cacheaside.get.duration", "result"); !reflect.DeepEqual(got, wantGets) {
		t.Errorf("cacheaside.get.duration counts by result = %v, want %v", got, wantGets)
	}
	ops := histogramCountsBy(t, rm, "cacheaside.redis.duration", "db.operation.name")
	// Each Get reads its value in one command on a single server: an MGET
	// with the prefix's clock key (Clear and tags), or a plain GET when
	// the process read the clock less than a millisecond before (the
	// clock's lease); the first carries the clock. Each of the two fills
	// (the value, the not-found marker) reads the clock again in an MGET
	// before it writes (a Clear during the load refuses the fill).
	if ops["MGET"]+ops["GET"] != 7 || ops["MGET"] < 3 || ops["EVALSHA"] == 0 {
		t.Errorf("cacheaside.redis.duration counts by command = %v, want MGET+GET 7 (one per Get: the value, with the clock key unless read within 1 ms; one MGET per fill: the clock), MGET at least 3, and some EVALSHA (locks and fills)", ops)
	}
}

// fakeSource is a cache as RegisterMetrics sees it.
type fakeSource struct {
	stats    cacheaside.Stats
	breakers map[string]cacheaside.BreakerState
}

func (f fakeSource) Stats() cacheaside.Stats { return f.stats }

func (f fakeSource) BreakerStates() map[string]cacheaside.BreakerState { return f.breakers }

// TestBreakerStateGauge checks the points reported for each breaker
// state, with and without a node address.
func TestBreakerStateGauge(t *testing.T) {
	for _, tc := range []struct {
		node  string
		state cacheaside.BreakerState
		want  map[string]int64 // by the state attribute
		addr  []attribute.KeyValue
	}{
		{"", cacheaside.BreakerClosed, map[string]int64{"closed": 1, "half_open": 0, "open": 0}, nil},
		{"", cacheaside.BreakerHalfOpen, map[string]int64{"closed": 0, "half_open": 1, "open": 0}, nil},
		{"10.0.0.1:7001", cacheaside.BreakerOpen, map[string]int64{"closed": 0, "half_open": 0, "open": 1},
			[]attribute.KeyValue{attribute.String("server.address", "10.0.0.1"), attribute.Int("server.port", 7001)}},
		{"", cacheaside.BreakerDisabled, map[string]int64{"disabled": 1}, nil},
	} {
		t.Run(string(tc.state), func(t *testing.T) {
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			defer func() { _ = mp.Shutdown(context.Background()) }()
			src := fakeSource{breakers: map[string]cacheaside.BreakerState{tc.node: tc.state}}
			if _, err := cacheotel.RegisterMetrics(mp.Meter("test"), "c", src); err != nil {
				t.Fatalf("RegisterMetrics() = %v", err)
			}
			rm := collect(t, reader)
			for state, want := range tc.want {
				set := attribute.NewSet(append([]attribute.KeyValue{attribute.String("cache", "c"), attribute.String("state", state)}, tc.addr...)...)
				if got, ok := int64Value(t, rm, "cacheaside.breaker.state", set); !ok || got != want {
					t.Errorf("breaker %q of node %q: point %v = %d (present %v), want %d", tc.state, tc.node, set.ToSlice(), got, ok, want)
				}
			}
			m, _ := find(rm, "cacheaside.breaker.state")
			if n := len(m.Data.(metricdata.Gauge[int64]).DataPoints); n != len(tc.want) {
				t.Errorf("breaker %q: %d points, want %d", tc.state, n, len(tc.want))
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
		src := fakeSource{stats: cacheaside.Stats{Loads: hits}}
		if _, err := cacheotel.RegisterMetrics(meter, name, src); err != nil {
			t.Fatalf("RegisterMetrics(%q) = %v", name, err)
		}
	}
	rm := collect(t, reader)
	for _, tc := range []struct {
		attrs attribute.Set
		want  int64
	}{{cacheAttrs("a"), 1}, {cacheAttrs("b"), 2}, {attribute.NewSet(), 3}} {
		if got, ok := int64Value(t, rm, "cacheaside.loads", tc.attrs); !ok || got != tc.want {
			t.Errorf("cacheaside.loads%v = %d (present %v), want %d", tc.attrs.ToSlice(), got, ok, tc.want)
		}
	}
}

// TestUnregister checks that a cache stops being reported once its
// registration is removed.
func TestUnregister(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	reg, err := cacheotel.RegisterMetrics(mp.Meter("test"), "c", fakeSource{stats: cacheaside.Stats{Loads: 5}})
	if err != nil {
		t.Fatalf("RegisterMetrics() = %v", err)
	}
	if got, ok := int64Value(t, collect(t, reader), "cacheaside.loads", cacheAttrs("c")); !ok || got != 5 {
		t.Fatalf("cacheaside.loads = %d (present %v) before Unregister, want 5", got, ok)
	}
	if err := reg.Unregister(); err != nil {
		t.Fatalf("Unregister() = %v", err)
	}
	if got, ok := int64Value(t, collect(t, reader), "cacheaside.loads", cacheAttrs("c")); ok {
		t.Errorf("cacheaside.loads = %d after Unregister, want no data point", got)
	}
}

func TestRegisterMetricsNilArguments(t *testing.T) {
	_, err := cacheotel.RegisterMetrics(nil, "c", nil)
	if err == nil {
		t.Fatal("RegisterMetrics(nil, \"c\", nil) = nil error, want one")
	}
	for _, want := range []string{"nil meter", "nil cache"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("RegisterMetrics(nil, \"c\", nil) = %q, want it to mention %q", err, want)
		}
	}
}
