package cacheaside

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
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
// Its Error is one line, fit for a log field; the stack is in Stack.
type PanicError struct {
	Value any    // the value passed to panic
	Stack []byte // the loader goroutine's stack at the panic
}

func (e *PanicError) Error() string {
	return "cacheaside: loader panicked: " + oneLine.Replace(fmt.Sprint(e.Value))
}

// oneLine turns line breaks into spaces.
var oneLine = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ")

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
	tags tagList // set by Tag
}

type loadScopeKey struct{}

// callLoader runs the loader for one key; see runLoader.
func (c *Cache[K, V]) callLoader(ctx context.Context, key K) loaded[V] {
	ld := loaded[V]{clock: c.loadClock(ctx)} // before the load: see clear.go
	var scope loadScope
	ld.took, ld.late, scope, ld.err = c.runLoader(ctx, func(ctx context.Context) error {
		var err error
		ld.val, err = safeLoad(ctx, c.load, key)
		return err
	})
	ld.ttl, ld.skip, ld.tags = scope.ttl, scope.skip || scope.tags.bad, scope.tags.enc
	return ld
}

// runLoader runs one call of a loader under the load timeout, after
// waiting for a load slot (WithMaxConcurrentLoads), and counts it. The
// slot wait is not part of the load timeout and ends only with ctx (the
// flight's: Close); a call nested in a loader's call (a loader that calls
// Get) uses its parent's slot. late reports that the loader returned after
// the timeout, when its result must not be cached: a load that old may
// have read data from before an Invalidate whose generation has since
// expired. scope is what the loader asked for with SetTTL and Tag.
func (c *Cache[K, V]) runLoader(ctx context.Context, call func(context.Context) error) (took time.Duration, late bool, scope loadScope, err error) {
	if _, nested := ctx.Value(loadScopeKey{}).(*loadScope); c.loads != nil && !nested {
		if err := c.loads.Acquire(ctx, 1); err != nil {
			return 0, true, scope, fmt.Errorf("cacheaside: waiting for a load slot: %w", err)
		}
		defer c.loads.Release(1)
	}
	lctx, cancel := context.WithTimeout(ctx, c.cfg.loadTimeout)
	defer cancel()
	sp := &loadScope{}
	lctx = context.WithValue(lctx, loadScopeKey{}, sp)
	c.stats.loads.Add(1)
	start := time.Now()
	err = callContained(lctx, call)
	took = time.Since(start)
	late = lctx.Err() != nil
	if err != nil && !errors.Is(err, ErrNotFound) {
		c.stats.loadErrors.Add(1)
		var pe *PanicError
		if errors.As(err, &pe) {
			c.stats.panics.Add(1)
		}
	}
	if sp.tags.bad {
		c.log(ctx, slog.LevelWarn, "cacheaside: a loader's tags break the bounds of Tag: its result is not cached", "tags", sp.tags.n)
	}
	return took, late, *sp, err
}

// errLoaderExited is the error of a load whose loader ended its goroutine
// with runtime.Goexit instead of returning.
var errLoaderExited = errors.New("cacheaside: loader called runtime.Goexit (t.FailNow or similar on a loader goroutine?)")

// callContained runs call, a loader call whose panics it recovers itself,
// on a goroutine of its own and waits for it, so that a runtime.Goexit in
// the loader (a test helper's FailNow) ends only that goroutine: it
// becomes the load's error instead of ending a flight's goroutine
// silently, which would hand its callers a zero value with a nil error or
// leave them, and Close, waiting for ever.
func callContained(ctx context.Context, call func(context.Context) error) error {
	done := make(chan error, 1)
	go func() {
		returned := false
		defer func() {
			if !returned {
				done <- errLoaderExited
			}
		}()
		err := call(ctx)
		returned = true
		done <- err
	}()
	return <-done
}

func stack() []byte { return debug.Stack() }
