package cacheotel

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// An Option configures [WrapLoader], [WrapBatchLoader], [GetHook] and
// [RedisHook]. Options are applied in order and the
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

// newConfig applies opts, in order, to the defaults.
func newConfig(opts []Option) config {
	cfg := defaultConfig()
	for _, opt := range opts {
		if opt != nil {
			opt(&cfg)
		}
	}
	return cfg
}

// WithMeterProvider sets where the instruments of WrapLoader, GetHook and
// RedisHook are created. Nil means the default.
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

// WithTracerProvider makes each load of WrapLoader run in a span named
// cacheaside.load, and each Get seen by GetHook a span named
// cacheaside.get, created by a tracer from tp. Nil means no spans.
//
// Default: nil (no spans). The global TracerProvider is not used unless it
// is passed here, as in WithTracerProvider(otel.GetTracerProvider()).
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(c *config) { c.tracers = tp }
}

// WithName sets the value of the cache attribute on the instruments and
// spans of WrapLoader, GetHook and RedisHook. Use the name given to
// [RegisterMetrics] for the same cache. The empty string leaves the
// attribute out.
//
// Default: "" (no cache attribute).
func WithName(name string) Option {
	return func(c *config) { c.name = name }
}
