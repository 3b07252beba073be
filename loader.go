package cacheaside

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"
)

// A LoadFunc reads the value of one key from the source of truth, usually a
// database. It runs on a goroutine of the cache, detached from the
// cancellation of any one caller but not from its values, under the load
// timeout (see [WithLoadTimeout]). Return an error that wraps [ErrNotFound]
// when the key does not exist: the answer is cached for the negative TTL.
// Any other error reaches every caller waiting on the load and is not
// cached. A panic is recovered and returned as a [*PanicError].
type LoadFunc[K comparable, V any] func(ctx context.Context, key K) (V, error)

// A BatchLoadFunc reads the values of many keys at once, for example with
// SELECT … WHERE id = ANY($1). Keys missing from the returned map do not
// exist.
type BatchLoadFunc[K comparable, V any] func(ctx context.Context, keys []K) (map[K]V, error)

// ErrNotFound is the error a loader wraps to say that a key does not exist.
// Get returns an error matching it (use errors.Is) both when the loader says
// so and when a cached "not found" answers instead of the loader.
var ErrNotFound = errors.New("cacheaside: not found")

// A PanicError is returned to every caller of a load whose loader panicked.
// The panic does not crash the process and does not leave the key locked.
type PanicError struct {
	Value any    // the value passed to panic
	Stack []byte // the loader goroutine's stack at the panic
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("cacheaside: loader panicked: %v\n\n%s", e.Value, e.Stack)
}

// A PanicError deliberately has no Unwrap: a loader that panics with an
// error wrapping ErrNotFound has still panicked, and must not be
// remembered as "not found".

// safeLoad calls load and turns a panic into a *PanicError.
func safeLoad[K comparable, V any](ctx context.Context, load LoadFunc[K, V], key K) (v V, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &PanicError{Value: r, Stack: debug.Stack()}
		}
	}()
	return load(ctx, key)
}

// SetTTL, called by a LoadFunc or BatchLoadFunc with the context it was
// given, sets how long the result it is about to return lives in Redis,
// instead of WithTTL (or WithNegativeTTL for a not-found answer); jitter
// still applies. A d of zero or less means: do not cache this result at
// all. A batch loader's call applies to every key of the batch. Outside a
// loader SetTTL does nothing.
func SetTTL(ctx context.Context, d time.Duration) {
	if s, ok := ctx.Value(loadScopeKey{}).(*loadScope); ok {
		if d <= 0 {
			s.skip = true
			return
		}
		s.ttl = min(max(d, time.Millisecond), maxDuration)
	}
}

// loadScope carries what a loader asked for through its context.
type loadScope struct {
	ttl  time.Duration
	skip bool
}

type loadScopeKey struct{}
