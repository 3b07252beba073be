package cacheaside

import (
	"context"
	"errors"

	"github.com/cacheaside/cacheaside/internal/flight"
)

// The goroutine a flight runs on once its leader hands it over (a miss,
// a caller gone during the read): owned by the Cache, detached from the
// caller's cancellation, and always finishing its flight, even when a
// codec or hook ends it with runtime.Goexit.

// errExited is the result of a flight whose goroutine a codec or a hook
// ended with runtime.Goexit (a test's t.FailNow, say) instead of
// returning: its callers get it rather than a zero value with a nil
// error, or a wait for ever.
var errExited = errors.New("cacheaside: a codec or hook ended the goroutine of a flight with runtime.Goexit")

// startFlight runs the rest of flight fl on a goroutine owned by the Cache
// (the caller must be registered with the tracker),
// detached from the cancellation of the caller (but not from its values),
// and publishes its result. A panic anywhere in it (a codec, a hook)
// becomes the flight's error, and so does a runtime.Goexit (errExited).
func (c *Cache[K, V]) startFlight(caller context.Context, fl *flight.Call[result[V]], vkey string, run func(context.Context) result[V]) {
	c.flights.Hold(fl)
	c.tracker.spawn()
	go func() {
		defer c.tracker.done()
		var r result[V]
		returned := false
		defer func() {
			if p := recover(); p != nil {
				r = result[V]{err: &PanicError{Value: p, Stack: stack()}}
			} else if !returned {
				r = result[V]{err: errExited}
			}
			c.flights.Finish(vkey, fl, r)
		}()
		r = run(flight.WithWaiters(detach(caller, c.life), fl.Waiters()))
		returned = true
	}()
}

// detached is a context with the values of one caller and the lifetime of
// the Cache: a flight keeps the first caller's trace and request values but
// is not cancelled when that caller goes away.
type detached struct {
	context.Context // the Cache's lifetime
	values          context.Context
}

func detach(values, life context.Context) context.Context {
	return detached{Context: life, values: values}
}

func (d detached) Value(key any) any { return d.values.Value(key) }
