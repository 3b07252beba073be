package cacheaside

import (
	"context"

	"github.com/cacheaside/cacheaside/internal/flight"
)

// WithWaiterContexts makes the cache remember, for each flight, the
// contexts of the other Gets and GetManys in this process that wait for
// it, so that a loader can see them with [Waiters]: a tracing wrapper
// (the otel module's WrapLoader) links their spans to the load's span.
// At most 128 waiters are kept per flight, OpenTelemetry's default limit
// of links per span. Waiters in other processes, which wait through the
// fill lock, are not known.
//
// Default: off. When on, a flight that a second caller joins allocates a
// small record, and each joining caller appends its context to it.
func WithWaiterContexts(on bool) Option {
	return func(c *config) { c.waiterCtxs = on }
}

// Waiters returns, from inside a loader, the contexts of the calls in this
// process that wait for the load running under ctx besides the one that
// started it (whose values ctx carries): the Gets that joined its flight
// so far, or for a batch load the Gets and GetManys that joined any of
// its keys. It returns nil unless [WithWaiterContexts] is on. The
// contexts may be done: their callers may have left.
func Waiters(ctx context.Context) []context.Context { return flight.Contexts(ctx) }
