// Package cacheotel implements OpenTelemetry metrics and traces for
// [cacheaside.Cache]. It lives in its own module so that the cache itself
// never depends on OpenTelemetry.
//
// Four pieces cover the sides of a cache:
//
//   - [GetHook] returns the function for [cacheaside.WithGetHook]: every
//     Get counts once in cacheaside.requests and is timed in
//     cacheaside.get.duration, both by result (hit, local_hit, miss,
//     stale, error); with [WithTracerProvider] each Get is a
//     cacheaside.get span.
//   - [WrapLoader] wraps a [cacheaside.LoadFunc] (and [WrapBatchLoader] a
//     [cacheaside.BatchLoadFunc]) so that every load records its latency
//     in the cacheaside.load.duration histogram by outcome (ok, not_found,
//     error) and, with [WithTracerProvider], runs in a cacheaside.load span.
//   - [RedisHook] is a go-redis hook for the client: every command is
//     timed in cacheaside.redis.duration by db.operation.name.
//   - [RegisterMetrics] exports the other counters of [cacheaside.Stats]
//     (loads, lock waits, Redis errors, warm-ups, …) and the state of each
//     Redis node's circuit breaker as observable instruments, read from the
//     cache at each collection.
//
// A typical setup names the cache once and uses the name for all four:
//
//	opts := []cacheotel.Option{cacheotel.WithMeterProvider(mp), cacheotel.WithName("products")}
//	rdb.AddHook(cacheotel.RedisHook(opts...))
//	cache, err := cacheaside.New(rdb, cacheotel.WrapLoader(loadProduct, opts...),
//		cacheaside.WithGetHook(cacheotel.GetHook(opts...)))
//	…
//	reg, err := cacheotel.RegisterMetrics(mp.Meter(cacheotel.ScopeName), "products", cache)
//	…
//	defer reg.Unregister()
//
// # Names
//
// Instruments follow the OpenTelemetry naming guidelines: a cacheaside.
// namespace, dots between namespaces, snake_case within a name, one
// instrument per quantity with attributes for its kinds (result, outcome,
// state) rather than one instrument per kind, curly-brace annotations as
// units of counts ("{request}", "{load}") and seconds for durations. A
// Prometheus exporter turns cacheaside.requests into
// cacheaside_requests_total and cacheaside.get.duration into
// cacheaside_get_duration_seconds. Every measurement carries the
// attribute cache set to the name given, so that several caches can share
// one MeterProvider; an empty name leaves the attribute out. Redis nodes
// are named by server.address and server.port, and Redis commands by
// db.operation.name and error.type, as in the database semantic
// conventions.
package cacheotel

// ScopeName is the instrumentation scope of the meters and tracers this
// package creates from a provider.
const ScopeName = "github.com/cacheaside/cacheaside/otel"

// attrCache is the attribute that names the cache on every measurement and
// span.
const attrCache = "cache"
