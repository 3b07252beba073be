package cacheotel

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// An Option configures [WrapLoader]. Options are applied in order and the
// last one wins.
type Option func(*config)

type config struct {
	meters  metric.MeterProvider
	tracers trace.TracerProvider // nil: no spans
	name    string
}

func defaultConfig() config {
	return config{meters: otel.GetMeterProvider()}
}

// WithMeterProvider sets where the cacheaside.load.duration histogram is
// created. Nil means the default.
//
// Default: the global MeterProvider (otel.GetMeterProvider) at the time
// WrapLoader is called; it forwards to a provider set later with
// otel.SetMeterProvider.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return func(c *config) {
		if mp == nil {
			mp = otel.GetMeterProvider()
		}
		c.meters = mp
	}
}

// WithTracerProvider makes each load run in a span named cacheaside.load,
// created by a tracer from tp. Nil means no spans.
//
// Default: nil (no spans). The global TracerProvider is not used unless it
// is passed here, as in WithTracerProvider(otel.GetTracerProvider()).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tracers = tp }
}

// WithName sets the value of the cache attribute on the load histogram and
// the load span. Use the name given to [RegisterMetrics] for the same
// cache. The empty string leaves the attribute out.
//
// Default: "" (no cache attribute).
func WithName(name string) Option {
	return func(c *config) { c.name = name }
}
