package flight

import (
	"context"
	"sync"
)

// MaxWaiters bounds the contexts kept per flight: OpenTelemetry's default
// limit of links per span.
const MaxWaiters = 128

// Waiters are the contexts of the callers that joined one flight.
type Waiters struct {
	mu   sync.Mutex
	ctxs []context.Context
}

// reset empties w for another flight, keeping its list's capacity and
// none of its contexts.
func (w *Waiters) reset() {
	w.mu.Lock()
	clear(w.ctxs)
	w.ctxs = w.ctxs[:0]
	w.mu.Unlock()
}

func (w *Waiters) add(ctx context.Context) {
	w.mu.Lock()
	if len(w.ctxs) < MaxWaiters {
		w.ctxs = append(w.ctxs, ctx)
	}
	w.mu.Unlock()
}

// waitersKey is the context key under which a flight's work carries the
// waiters of the flights it resolves.
type waitersKey struct{}

// WithWaiters returns ctx carrying ws (nil entries are skipped), or ctx
// itself when there are none.
func WithWaiters(ctx context.Context, ws ...*Waiters) context.Context {
	var keep []*Waiters
	for _, w := range ws {
		if w != nil {
			keep = append(keep, w)
		}
	}
	if len(keep) == 0 {
		return ctx
	}
	return context.WithValue(ctx, waitersKey{}, keep)
}

// Contexts returns the contexts of every waiter that ctx carries, nil if
// none.
func Contexts(ctx context.Context) []context.Context {
	ws, _ := ctx.Value(waitersKey{}).([]*Waiters)
	var out []context.Context
	for _, w := range ws {
		w.mu.Lock()
		out = append(out, w.ctxs...)
		w.mu.Unlock()
	}
	return out
}
