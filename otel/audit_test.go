package cacheotel_test

import (
	"context"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	cacheotel "github.com/cacheaside/cacheaside/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// TestAuditGauges: the stale ratio and the oldest stale age are reported
// from Stats once the auditor has checked a value, and not before.
func TestAuditGauges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		stats  cacheaside.Stats
		ratio  float64
		oldest float64
		points bool
	}{
		{"off", cacheaside.Stats{}, 0, 0, false},
		{"clean", cacheaside.Stats{AuditChecks: 40}, 0, 0, true},
		{"stale", cacheaside.Stats{AuditChecks: 40, AuditStale: 2, AuditOldestStale: 3500 * time.Millisecond}, 0.05, 3.5, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			defer func() { _ = mp.Shutdown(context.Background()) }()
			if _, err := cacheotel.RegisterMetrics(mp.Meter("test"), "c", fakeSource{stats: tc.stats}); err != nil {
				t.Fatalf("RegisterMetrics() = %v", err)
			}
			rm := collect(t, reader)
			for name, want := range map[string]float64{"cacheaside.audit.stale.ratio": tc.ratio, "cacheaside.audit.stale.oldest": tc.oldest} {
				m, ok := find(rm, name)
				var points []metricdata.DataPoint[float64]
				if ok {
					points = m.Data.(metricdata.Gauge[float64]).DataPoints
				}
				if !tc.points {
					if len(points) != 0 {
						t.Errorf("%s: %d points, want none before a check", name, len(points))
					}
					continue
				}
				if len(points) != 1 || points[0].Value != want {
					t.Errorf("%s = %v, want one point %v", name, points, want)
				}
			}
		})
	}
}
