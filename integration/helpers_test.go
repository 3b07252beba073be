package integration_test

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/envelope"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/cacheaside/cacheaside/internal/testlog"
	"github.com/redis/go-redis/v9"
)

// Helpers of the tests of this module: the few the root module's
// faulthelpers_test.go and helpers_test.go define that these tests need.
// They are copies, not imports, because a _test.go file cannot be imported
// from another module, and the root keeps them in test files so that they
// never reach the library's API.

const (
	// faultBudget is the WithRedisTimeout of the fault tests.
	faultBudget = 100 * time.Millisecond
	// faultSlack is the generous margin a Get may take beyond the loader's
	// time and the Redis budgets it spends, for scheduling under -race. It
	// is still far below go-redis's default 3s read timeout.
	faultSlack = 700 * time.Millisecond
	// faultGetTimeout bounds each Get of the tests, so that a hang fails the
	// test instead of blocking it.
	faultGetTimeout = 10 * time.Second
)

// faultValue is the value the fault tests' loaders return for key k.
func faultValue(k int) string { return "value-" + strconv.Itoa(k) }

// faultKeys returns the keys from..to, inclusive.
func faultKeys(from, to int) []int {
	ks := make([]int, 0, to-from+1)
	for k := from; k <= to; k++ {
		ks = append(ks, k)
	}
	return ks
}

// faultLoader is a LoadFunc that counts its calls, how many run at once, and
// can be slowed down or made to fail per key. Set its fields before the
// first load.
type faultLoader struct {
	delay time.Duration
	fail  func(k int) error // nil: never fails

	calls      atomic.Int64
	running    atomic.Int64
	maxRunning atomic.Int64
}

func (l *faultLoader) load(ctx context.Context, k int) (string, error) {
	l.calls.Add(1)
	n := l.running.Add(1)
	defer l.running.Add(-1)
	for m := l.maxRunning.Load(); n > m && !l.maxRunning.CompareAndSwap(m, n); m = l.maxRunning.Load() {
	}
	if l.delay > 0 {
		t := time.NewTimer(l.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if l.fail != nil {
		if err := l.fail(k); err != nil {
			return "", err
		}
	}
	return faultValue(k), nil
}

// budgetModes are the two ways the Redis timeout holds on a *redis.Client
// built with default options (no ContextTimeoutEnabled): calls abandoned at
// the timeout on goroutines of their own (the default, and what Cluster
// clients always use), and the timeout clone (WithTimeoutClone). The fault
// tests run in both.
var budgetModes = []struct {
	name     string
	opt      cacheaside.Option
	abandons bool
}{
	{"mode=clone", cacheaside.WithTimeoutClone(true), false},
	{"mode=abandon", cacheaside.WithTimeoutClone(false), true},
}

// newFaultClient returns a go-redis client for addr with default options,
// closed when the test ends (after the caches built on it).
func newFaultClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	testlog.Attach(t)
	rdb := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// newFaultCache builds a cache of int keys and string values and closes it
// when the test ends, before the client it uses.
func newFaultCache(t *testing.T, rdb redis.UniversalClient, load cacheaside.LoadFunc[int, string], opts ...cacheaside.Option) *cacheaside.Cache[int, string] {
	t.Helper()
	testlog.Attach(t)
	c, err := cacheaside.New(rdb, load, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close() = %v, want nil", err)
		}
	})
	return c
}

// mustGet gets k and fails the test unless it returns k's loader value with
// a nil error. It returns how long the Get took.
func mustGet(t *testing.T, c *cacheaside.Cache[int, string], k int) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), faultGetTimeout)
	defer cancel()
	start := time.Now()
	v, err := c.Get(ctx, k)
	took := time.Since(start)
	if err != nil || v != faultValue(k) {
		t.Fatalf("Get(%d) = %q, %v, want %q, nil", k, v, err, faultValue(k))
	}
	return took
}

// mustGetAll gets every key once, in order.
func mustGetAll(t *testing.T, c *cacheaside.Cache[int, string], keys []int) {
	t.Helper()
	for _, k := range keys {
		mustGet(t, c, k)
	}
}

// getConcurrently gets every key at once, each from its own goroutine, and
// reports each Get that does not return the key's loader value.
func getConcurrently(t *testing.T, c *cacheaside.Cache[int, string], keys []int) {
	t.Helper()
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), faultGetTimeout)
			defer cancel()
			if v, err := c.Get(ctx, k); err != nil || v != faultValue(k) {
				t.Errorf("Get(%d) = %q, %v, want %q, nil", k, v, err, faultValue(k))
			}
		})
	}
	wg.Wait()
}

// waitFor polls cond until it holds, failing the test after within.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting until %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// getStorm runs Gets of keys 0..keys-1 from several goroutines, each with
// a marked context, until halted, and records every failure and the
// slowest Get.
type getStorm struct {
	stop chan struct{}
	wg   sync.WaitGroup

	gets    atomic.Int64
	slowest atomic.Int64 // nanoseconds

	mu       sync.Mutex
	failures []string
}

func startGetStorm(c *cacheaside.Cache[int, string], workers, keys int) *getStorm {
	s := &getStorm{stop: make(chan struct{})}
	for w := range workers {
		s.wg.Go(func() {
			for i := w; ; i++ {
				select {
				case <-s.stop:
					return
				default:
				}
				s.get(c, i%keys)
			}
		})
	}
	return s
}

func (s *getStorm) get(c *cacheaside.Cache[int, string], k int) {
	ctx, cancel := context.WithTimeout(context.Background(), faultGetTimeout)
	defer cancel()
	start := time.Now()
	v, err := c.Get(ctx, k)
	took := int64(time.Since(start))
	s.gets.Add(1)
	for m := s.slowest.Load(); took > m && !s.slowest.CompareAndSwap(m, took); m = s.slowest.Load() {
	}
	if err != nil || v != faultValue(k) {
		s.mu.Lock()
		s.failures = append(s.failures, fmt.Sprintf("Get(%d) = %q, %v after %v, want %q, nil", k, v, err, time.Duration(took), faultValue(k)))
		s.mu.Unlock()
	}
}

// halt stops the goroutines and reports every failed Get and a Get slower
// than maxLatency (zero: no bound) as test errors.
func (s *getStorm) halt(t *testing.T, maxLatency time.Duration) {
	t.Helper()
	close(s.stop)
	s.wg.Wait()
	if n := len(s.failures); n > 0 {
		t.Errorf("%d of %d Gets failed; first ones:\n%v", n, s.gets.Load(), s.failures[:min(n, 5)])
	}
	if slowest := time.Duration(s.slowest.Load()); maxLatency > 0 && slowest > maxLatency {
		t.Errorf("slowest of %d Gets took %v, want at most %v", s.gets.Load(), slowest, maxLatency)
	}
	if s.gets.Load() == 0 {
		t.Errorf("no Get ran")
	}
}

// valueKeys returns the Redis keys of the values of keys under prefix, as
// the package documentation lays them out.
func valueKeys(prefix string, keys []int) []string {
	vks := make([]string, len(keys))
	for i, k := range keys {
		vks[i] = prefix + "{" + strconv.Itoa(k) + "}"
	}
	return vks
}

// existing returns how many of the value keys of keys exist in srv.
func existing(t *testing.T, srv *redistest.Server, prefix string, keys []int) int {
	t.Helper()
	n, err := strconv.Atoi(srv.CLI(t, slices.Concat([]string{"EXISTS"}, valueKeys(prefix, keys))...))
	if err != nil {
		t.Fatalf("EXISTS: %v", err)
	}
	return n
}

// survivesFault runs Gets of 20 warm keys from 4 goroutines on a cache over
// rdb (Redis timeout faultBudget, breaker after 5 failures, 300ms cooldown,
// then opts), calls inject, waits for the breaker to open, keeps the fault
// 700 ms, calls heal and waits until Gets hit Redis again. Every Get must
// return the loader's value within the loader's time plus one Redis
// timeout (and slack). It returns the cache and the Stats taken just
// before heal.
func survivesFault(t *testing.T, rdb redis.UniversalClient, opts []cacheaside.Option, fault string, inject, heal func()) (*cacheaside.Cache[int, string], cacheaside.Stats) {
	t.Helper()
	ld := &faultLoader{delay: 20 * time.Millisecond}
	c := newFaultCache(t, rdb, ld.load, append([]cacheaside.Option{
		cacheaside.WithRedisTimeout(faultBudget),
		cacheaside.WithBreaker(5, 300*time.Millisecond)}, opts...)...)
	keys := faultKeys(0, 19)
	mustGetAll(t, c, keys)

	storm := startGetStorm(c, 4, len(keys))
	time.Sleep(100 * time.Millisecond)
	inject()
	waitFor(t, 5*time.Second, "the breaker opens with "+fault, func() bool {
		return c.Stats().Breaker == cacheaside.BreakerOpen
	})
	time.Sleep(700 * time.Millisecond)
	during := c.Stats()
	heal()
	waitFor(t, 10*time.Second, "Gets hit Redis again after "+fault, func() bool {
		s := c.Stats()
		return s.Breaker == cacheaside.BreakerClosed && s.Hits > during.Hits+uint64(len(keys))
	})
	// Every Get waited at most one Redis timeout before it loaded: never the
	// client's 3s read timeout.
	storm.halt(t, ld.delay+faultBudget+faultSlack)
	return c, during
}

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
		if err := c.Close(); err != nil {
			t.Errorf("Close() = %v, want nil", err)
		}
	})
	return c
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

// isNotFoundMarker reports whether Redis holds a not-found marker under key.
func isNotFoundMarker(t *testing.T, srv *redistest.Server, key string) bool {
	t.Helper()
	h, _, exists := rawEntry(t, srv, key)
	return exists && h.Flags&envelope.NotFound != 0
}
