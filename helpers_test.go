package cacheaside_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/envelope"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/cacheaside/cacheaside/internal/testlog"
	"github.com/redis/go-redis/v9"
)

// Helpers shared by the behavioural tests (get, stampede, consistency,
// loader, corrupt and postgres). Each test starts its own redis-server, so
// tests never see each other's keys; every Cache and client is closed when
// its test ends, which keeps goleak in TestMain quiet.

// waitLimit bounds every wait on something the test itself set in motion.
// It is far above what any step needs even on a loaded machine: reaching
// it means the behaviour is broken (a deadlock, a lost wake-up), not slow.
const waitLimit = 10 * time.Second

// testDeadline bounds each test's Gets through testContext.
const testDeadline = 30 * time.Second

// testContext returns a context that ends testDeadline from now, or when
// the test ends: a Get that never returns then fails the test with a
// message (context deadline exceeded) instead of hanging the whole run.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testDeadline)
	t.Cleanup(cancel)
	return ctx
}

// item is the value type most tests cache.
type item struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

// newCache returns a Cache over a client of its own to srv, as a separate
// process would have, and closes it when the test ends.
func newCache[K comparable, V any](t *testing.T, srv *redistest.Server, load cacheaside.LoadFunc[K, V], opts ...cacheaside.Option) *cacheaside.Cache[K, V] {
	t.Helper()
	return newCacheOn(t, srv.Client(t), load, opts...)
}

// redisTimeout replaces the default Redis timeout (100ms) in the tests'
// Caches. These tests are about the protocol, and on a loaded machine
// running -race a healthy Redis can take longer than 100ms to answer: the
// Cache would then rightly fail open and load without the lock, which is
// not what the test is about. Tests of the timeout itself pass their own
// WithRedisTimeout, which wins.
const redisTimeout = 5 * time.Second

// newCacheOn returns a Cache over rdb and closes it when the test ends,
// before rdb is closed.
func newCacheOn[K comparable, V any](t *testing.T, rdb redis.UniversalClient, load cacheaside.LoadFunc[K, V], opts ...cacheaside.Option) *cacheaside.Cache[K, V] {
	t.Helper()
	testlog.Attach(t)
	opts = append([]cacheaside.Option{cacheaside.WithRedisTimeout(redisTimeout)}, opts...)
	c, err := cacheaside.New(rdb, load, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		// A test that leaves Redis down after a Set or Invalidate leaves
		// it queued: Close says so (replay_test.go tests that).
		if err := c.Close(); err != nil && !errors.Is(err, cacheaside.ErrQueued) {
			t.Errorf("Close() = %v, want nil", err)
		}
	})
	return c
}

// mustGetValue fails the test unless c.Get(key) returns want.
func mustGetValue[K, V comparable](t *testing.T, c *cacheaside.Cache[K, V], key K, want V, what string) {
	t.Helper()
	if v, err := c.Get(testContext(t), key); err != nil || v != want {
		t.Errorf("%s: Get(%#v) = %#v, %v; want %#v", what, key, v, err, want)
	}
}

// mustRejectOption fails the test unless New(rdb, load, opt) returns an
// error containing want.
func mustRejectOption[K comparable, V any](t *testing.T, rdb redis.UniversalClient, load cacheaside.LoadFunc[K, V], opt cacheaside.Option, want string) {
	t.Helper()
	c, err := cacheaside.New(rdb, load, opt)
	if err == nil {
		_ = c.Close()
		t.Fatalf("New = nil error, want one containing %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("New = %v, want an error containing %q", err, want)
	}
}

// outcome is what one Get returned.
type outcome[V any] struct {
	val V
	err error
}

// getAsync runs Get on its own goroutine and delivers the outcome on the
// returned channel.
func getAsync[K comparable, V any](ctx context.Context, c *cacheaside.Cache[K, V], key K) <-chan outcome[V] {
	ch := make(chan outcome[V], 1)
	go func() {
		v, err := c.Get(ctx, key)
		ch <- outcome[V]{v, err}
	}()
	return ch
}

// await waits for ch to deliver (or be closed) and fails the test after
// waitLimit.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out after %v waiting for %s", waitLimit, what)
		var zero T
		return zero
	}
}

// valueKey is the Redis key of the value of a key that encodes to s with
// the default prefix, as the package documentation lays it out.
func valueKey(s string) string { return "ca:{" + s + "}" }

// rawEntry reads key from Redis and decodes its envelope. exists is false
// when the key is missing; an entry the envelope decoder rejects fails the
// test.
func rawEntry(t *testing.T, srv *redistest.Server, key string) (h envelope.Header, payload []byte, exists bool) {
	t.Helper()
	if srv.CLI(t, "EXISTS", key) != "1" {
		return h, nil, false
	}
	raw := srv.CLI(t, "GET", key)
	h, payload, err := envelope.Decode([]byte(raw))
	if err != nil {
		t.Fatalf("Redis holds %q = %q, which the cache cannot read: %v", key, raw, err)
	}
	return h, payload, true
}

// storedValue returns the value Redis holds under key, decoded as the cache
// decodes it. ok is false when the key is missing; a not-found marker or an
// unreadable entry fails the test.
func storedValue[V any](t *testing.T, srv *redistest.Server, key string) (v V, ok bool) {
	t.Helper()
	h, payload, exists := rawEntry(t, srv, key)
	if !exists {
		return v, false
	}
	if h.Flags&envelope.NotFound != 0 {
		t.Fatalf("Redis holds a not-found marker under %q, want a value", key)
	}
	if err := json.Unmarshal(payload, &v); err != nil {
		t.Fatalf("Redis holds %q with payload %q, which does not decode into %T: %v", key, payload, v, err)
	}
	return v, true
}

// isNotFoundMarker reports whether Redis holds a not-found marker under key.
func isNotFoundMarker(t *testing.T, srv *redistest.Server, key string) bool {
	t.Helper()
	h, _, exists := rawEntry(t, srv, key)
	return exists && h.Flags&envelope.NotFound != 0
}

// pttl returns the remaining time to live of key in milliseconds (-2 when
// missing, -1 without expiry).
func pttl(t *testing.T, srv *redistest.Server, key string) int64 {
	t.Helper()
	s := srv.CLI(t, "PTTL", key)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("PTTL %s = %q, want an integer", key, s)
	}
	return n
}

// allKeys returns every key in Redis, sorted.
func allKeys(t *testing.T, srv *redistest.Server) []string {
	t.Helper()
	rdb := srv.Client(t)
	keys, err := rdb.Keys(context.Background(), "*").Result()
	if err != nil {
		t.Fatalf("KEYS *: %v", err)
	}
	_ = rdb.Close()
	slices.Sort(keys)
	return keys
}

// valueAndLockKeys returns the keys in Redis other than generations
// (<prefix>{s}:gen) and clock keys (<prefix>{tags}:clock), sorted: a
// load's acquire leaves a generation behind for the generation TTL even
// when nothing is written, and the first read of a prefix creates its
// clock key (clockloss.go).
func valueAndLockKeys(t *testing.T, srv *redistest.Server) []string {
	t.Helper()
	var out []string
	for _, k := range allKeys(t, srv) {
		if !strings.HasSuffix(k, ":gen") && !strings.HasSuffix(k, "{tags}:clock") {
			out = append(out, k)
		}
	}
	return out
}

// commandCounts returns, since the last CONFIG RESETSTAT, how many reads
// (GET, and MGET: a read of a value on a single server also reads the
// prefix's clock key, clear.go), EVALSHA and EVAL commands the server
// ran. Commands a script runs count too: a hit must be one read and no
// script.
func commandCounts(t *testing.T, srv *redistest.Server) (get, evalsha, eval int64) {
	t.Helper()
	return redisReads(t, srv), redisCommands(t, srv, "evalsha"), redisCommands(t, srv, "eval")
}

// redisReads returns how many GET and MGET commands the server ran since
// the last CONFIG RESETSTAT: the reads of values (on a single server a
// read of values is an MGET that also reads the prefix's clock key).
func redisReads(tb testing.TB, srv *redistest.Server) int64 {
	return redisCommands(tb, srv, "get") + redisCommands(tb, srv, "mget")
}

// isPanic reports whether err is a *cacheaside.PanicError.
func isPanic(err error) (*cacheaside.PanicError, bool) {
	var pe *cacheaside.PanicError
	ok := errors.As(err, &pe)
	return pe, ok
}

// redisCommands returns how many times the server ran cmd since the last
// CONFIG RESETSTAT.
func redisCommands(tb testing.TB, srv *redistest.Server, cmd string) int64 {
	info := srv.CLI(tb, "INFO", "commandstats")
	for line := range strings.SplitSeq(info, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls=")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
		return n
	}
	return 0
}

// roundTrips is redistest.RoundTrips: the commands of each round trip.
type roundTrips = redistest.RoundTrips
