// Package cacheotel implements OpenTelemetry metrics and traces for
// [cacheaside.Cache]. It lives in its own module so that the cache itself
// never depends on OpenTelemetry.
//
// Two pieces cover the two sides of a cache:
//
//   - [RegisterMetrics] exports the counters of [cacheaside.Stats] (hits,
//     misses, loads, Redis errors, warm-ups, …) and the circuit breaker's
//     state as observable instruments, read from the cache's Stats method
//     at each collection.
//   - [WrapLoader] wraps a [cacheaside.LoadFunc] (and [WrapBatchLoader] a
//     [cacheaside.BatchLoadFunc]) so that every load records its latency
//     in the cacheaside.load.duration histogram and, with
//     [WithTracerProvider], runs in a cacheaside.load span.
//
// A typical setup names the cache once and uses the name for both:
//
//	load := cacheotel.WrapLoader(loadProduct,
//		cacheotel.WithMeterProvider(mp), cacheotel.WithName("products"))
//	cache, err := cacheaside.New(rdb, load)
//	…
//	reg, err := cacheotel.RegisterMetrics(mp.Meter(cacheotel.ScopeName), "products", cache.Stats)
//	…
//	defer reg.Unregister()
//
// # Names
//
// Instruments follow the OpenTelemetry naming guidelines: a cacheaside.
// namespace, dots between namespaces, curly-brace annotations as units of
// counts ("{request}", "{load}") and seconds for durations. A Prometheus
// exporter turns cacheaside.hits into cacheaside_hits_total and
// cacheaside.load.duration into cacheaside_load_duration_seconds. Every
// measurement carries the attribute cache set to the name given, so that
// several caches can share one MeterProvider; an empty name leaves the
// attribute out.
package cacheotel

// ScopeName is the instrumentation scope of the meters and tracers this
// package creates from a provider.
const ScopeName = "github.com/cacheaside/cacheaside/otel"

// attrCache is the attribute that names the cache on every measurement and
// span.
const attrCache = "cache"
