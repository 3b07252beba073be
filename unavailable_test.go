package cacheaside_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// The tests in this file check that the write paths' errors caused by an
// unavailable Redis match cacheaside.ErrRedisUnavailable, whatever the
// failure looked like underneath (refused connection, no reply within the
// budget, a call the breaker skipped). Before v0.2 they wrapped
// unexported errors and no caller could match them.

// unavailableCache returns a Cache over srv with a short Redis timeout,
// that has read srv once (a fresh client's first call is never judged
// failed, see WithRedisTimeout).
func unavailableCache(t *testing.T, srv *redistest.Server, opts ...cacheaside.Option) *cacheaside.Cache[int, string] {
	t.Helper()
	opts = append([]cacheaside.Option{cacheaside.WithRedisTimeout(100 * time.Millisecond)}, opts...)
	c := newCacheOn(t, srv.Client(t), func(_ context.Context, k int) (string, error) { return faultValue(k), nil }, opts...)
	if _, err := c.Get(testContext(t), 1); err != nil {
		t.Fatalf("Get(1) with Redis up = %v", err)
	}
	return c
}

// checkWritesUnavailable calls Set and Invalidate rounds times and checks
// that each returns an error matching ErrRedisUnavailable.
func checkWritesUnavailable(t *testing.T, c *cacheaside.Cache[int, string], rounds int) {
	t.Helper()
	ctx := testContext(t)
	for i := range rounds {
		if err := c.Set(ctx, 1, "new"); !errors.Is(err, cacheaside.ErrRedisUnavailable) {
			t.Errorf("round %d: Set = %v, want an error matching ErrRedisUnavailable", i, err)
		}
		if err := c.Invalidate(ctx, 1, 2); !errors.Is(err, cacheaside.ErrRedisUnavailable) {
			t.Errorf("round %d: Invalidate = %v, want an error matching ErrRedisUnavailable", i, err)
		}
	}
}

// TestWritesWithRedisKilled: kill -9, then Set and Invalidate, first on
// refused connections and then, once the breaker has opened, skipped.
func TestWritesWithRedisKilled(t *testing.T) {
	srv := redistest.Start(t)
	c := unavailableCache(t, srv)
	srv.Kill()
	checkWritesUnavailable(t, c, 4) // 8 failed calls: past the breaker's 5
	if s := c.Stats(); s.RedisSkipped == 0 {
		t.Errorf("Stats().RedisSkipped = 0, want the breaker to have skipped calls (so both kinds were checked)")
	}
}

// TestWritesWithRedisFrozen: SIGSTOP, so that calls get no reply at all
// and fail at the Redis timeout.
func TestWritesWithRedisFrozen(t *testing.T) {
	srv := redistest.Start(t)
	c := unavailableCache(t, srv, cacheaside.WithCircuitBreaker(cacheaside.CircuitBreaker{Failures: -1}))
	freezeServer(t, srv)
	checkWritesUnavailable(t, c, 1)
}

// TestWarmWithRedisKilled: a warm-up whose keys' fill locks cannot be
// taken fails with ErrRedisUnavailable.
func TestWarmWithRedisKilled(t *testing.T) {
	srv := redistest.Start(t)
	c := unavailableCache(t, srv, cacheaside.WithWarmupKeys(1, 2, 3))
	srv.Kill()
	if err := c.Warm(testContext(t)); !errors.Is(err, cacheaside.ErrRedisUnavailable) {
		t.Errorf("Warm = %v, want an error matching ErrRedisUnavailable", err)
	}
}

// TestLoaderErrorIsNotRedisUnavailable: a loader's own connection error
// during Warm is the loader's, not Redis's.
func TestLoaderErrorIsNotRedisUnavailable(t *testing.T) {
	srv := redistest.Start(t)
	dbDown := errors.New("dial tcp 127.0.0.1:5432: connect: connection refused")
	c := newCache(t, srv, func(context.Context, int) (string, error) { return "", dbDown },
		cacheaside.WithWarmupKeys(1), cacheaside.WithRestartCheck(0)) // no automatic warm-up to race with
	err := c.Warm(testContext(t))
	if !errors.Is(err, dbDown) || errors.Is(err, cacheaside.ErrRedisUnavailable) {
		t.Errorf("Warm = %v, want the loader's error and not ErrRedisUnavailable", err)
	}
}

// TestPanicErrorIsOneLine: the error message of a loader panic fits a log
// line; the stack stays on the value.
func TestPanicErrorIsOneLine(t *testing.T) {
	srv := redistest.Start(t)
	c := newCache(t, srv, func(context.Context, int) (string, error) { panic("bad\nrow") })
	_, err := c.Get(testContext(t), 1)
	pe, ok := isPanic(err)
	if !ok {
		t.Fatalf("Get = %v, want a *PanicError", err)
	}
	if msg := err.Error(); strings.ContainsAny(msg, "\r\n") || msg != "cacheaside: loader panicked: bad row" {
		t.Errorf("Error() = %q, want %q on one line", msg, "cacheaside: loader panicked: bad row")
	}
	if !strings.Contains(string(pe.Stack), "unavailable_test.go") {
		t.Errorf("Stack = %q, want the loader's stack", pe.Stack)
	}
}
