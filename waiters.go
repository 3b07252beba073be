package cacheaside

import (
	"context"

	"github.com/cacheaside/cacheaside/internal/flight"
)

// Waiters returns, from inside a loader, the contexts of the calls in this
// process that wait for the load running under ctx besides the one that
// started it (whose values ctx carries): the Gets that joined its flight
// so far, or for a batch load the Gets and GetManys that joined any of
// its keys. It returns nil if [WithWaiterContexts](false) turned that off. The
// contexts may be done: their callers may have left.
func Waiters(ctx context.Context) []context.Context { return flight.Contexts(ctx) }
