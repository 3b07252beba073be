package cacheaside

import (
	"context"
	"sync"
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

// maxWaiters bounds the contexts kept per flight.
const maxWaiters = 128

// waiters are the contexts of the callers that joined one flight.
type waiters struct {
	mu   sync.Mutex
	ctxs []context.Context
}

func (w *waiters) add(ctx context.Context) {
	w.mu.Lock()
	if len(w.ctxs) < maxWaiters {
		w.ctxs = append(w.ctxs, ctx)
	}
	w.mu.Unlock()
}

// waitersKey is the context key under which a flight's goroutine carries
// the waiters of the flights it resolves.
type waitersKey struct{}

// withWaiters returns ctx carrying ws, or ctx itself when there are none.
func withWaiters(ctx context.Context, ws []*waiters) context.Context {
	if len(ws) == 0 {
		return ctx
	}
	return context.WithValue(ctx, waitersKey{}, ws)
}

// Waiters returns, from inside a loader, the contexts of the calls in this
// process that wait for the load running under ctx besides the one that
// started it (whose values ctx carries): the Gets that joined its flight
// so far, or for a batch load the Gets and GetManys that joined any of
// its keys. It returns nil unless [WithWaiterContexts] is on. The
// contexts may be done: their callers may have left.
func Waiters(ctx context.Context) []context.Context {
	ws, _ := ctx.Value(waitersKey{}).([]*waiters)
	var out []context.Context
	for _, w := range ws {
		w.mu.Lock()
		out = append(out, w.ctxs...)
		w.mu.Unlock()
	}
	return out
}
