package cacheaside_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestGetHitIsOneRedisGet proves the hit path: a stored value comes back
// with exactly one Redis GET, no script (so no lock traffic), no load, and
// counts as a hit.
func TestGetHitIsOneRedisGet(t *testing.T) {
	srv := redistest.Start(t)
	var loads atomic.Int64
	c := newCache(t, srv, func(ctx context.Context, id int64) (item, error) {
		loads.Add(1)
		return item{ID: id, Name: "loaded"}, nil
	})
	ctx := testContext(t)
	want := item{ID: 1, Name: "stored"}
	if err := c.Set(ctx, 1, want); err != nil {
		t.Fatalf("Set(1) = %v, want nil", err)
	}

	srv.CLI(t, "CONFIG", "RESETSTAT")
	got, err := c.Get(ctx, 1)
	if err != nil || got != want {
		t.Fatalf("Get(%v) = %v, %v; want %v, nil", 1, got, err, want)
	}
	if get, evalsha, eval := commandCounts(t, srv); get != 1 || evalsha != 0 || eval != 0 {
		t.Errorf("Get(1) on a stored key sent %d GET, %d EVALSHA, %d EVAL; want 1, 0, 0", get, evalsha, eval)
	}
	if n := loads.Load(); n != 0 {
		t.Errorf("loader called %d times on a hit, want 0", n)
	}
	if s := c.Stats(); s.Hits != 1 || s.Misses != 0 || s.Loads != 0 || s.LockAcquired != 0 {
		t.Errorf("Stats() after one hit = %+v, want Hits 1, Misses 0, Loads 0, LockAcquired 0", s)
	}
}

type sku string

type tenantKey struct {
	Tenant string
	ID     int
}

// TestKeyLayout proves that int64 keys, named string keys and struct keys
// with WithKeyFunc land under the documented Redis keys <prefix>{s},
// <prefix>{s}:lock (held during the load only) and <prefix>{s}:gen
// (the fence, written by the load's acquire and by Invalidate), and that another Cache reads them back without
// loading.
func TestKeyLayout(t *testing.T) {
	t.Run("int64", func(t *testing.T) {
		srv := redistest.Start(t)
		load, lockSeen := loaderThatSeesLock(t, srv, "ca:{42}:lock", func(id int64) string { return fmt.Sprint("n", id) })
		checkLayout(t, srv, newCache(t, srv, load), newCache(t, srv, load), int64(42), "n42", "ca:{42}", lockSeen)
	})
	t.Run("named string", func(t *testing.T) {
		srv := redistest.Start(t)
		load, lockSeen := loaderThatSeesLock(t, srv, "shop:{ab-1}:lock", func(k sku) string { return "s" + string(k) })
		opt := cacheaside.WithPrefix("shop:")
		checkLayout(t, srv, newCache(t, srv, load, opt), newCache(t, srv, load, opt), sku("ab-1"), "sab-1", "shop:{ab-1}", lockSeen)
	})
	t.Run("struct with WithKeyFunc", func(t *testing.T) {
		srv := redistest.Start(t)
		keyFunc := cacheaside.WithKeyFunc(func(k tenantKey) string { return fmt.Sprintf("%s/%d", k.Tenant, k.ID) })
		load, lockSeen := loaderThatSeesLock(t, srv, "ca:{acme/7}:lock", func(k tenantKey) string { return k.Tenant })
		checkLayout(t, srv, newCache(t, srv, load, keyFunc), newCache(t, srv, load, keyFunc), tenantKey{"acme", 7}, "acme", "ca:{acme/7}", lockSeen)
	})
	t.Run("string with a closing brace is hashed", func(t *testing.T) {
		srv := redistest.Start(t)
		// "ca:{#" + hex SHA-256 of "a}b" + "}": a '}' would end the hash tag early.
		const vkey = "ca:{#538c54fe17b56e2f2b4753732e0de804a57caae257094071291626ea38e826d7}"
		load, lockSeen := loaderThatSeesLock(t, srv, vkey+":lock", func(k string) string { return "v" + k })
		checkLayout(t, srv, newCache(t, srv, load), newCache(t, srv, load), "a}b", "va}b", vkey, lockSeen)
	})
}

// loaderThatSeesLock returns a loader that returns value(key) and records
// whether lockKey existed in Redis while it ran.
func loaderThatSeesLock[K comparable](t *testing.T, srv *redistest.Server, lockKey string, value func(K) string) (cacheaside.LoadFunc[K, string], *atomic.Int64) {
	rdb := srv.Client(t)
	var seen atomic.Int64
	return func(ctx context.Context, k K) (string, error) {
		n, err := rdb.Exists(ctx, lockKey).Result()
		if err != nil {
			return "", err
		}
		seen.Store(n)
		return value(k), nil
	}, &seen
}

// checkLayout gets key through c and checks the Redis keys it leaves: the
// value under vkey (with the lock seen during the load and gone after) and
// the generation that fenced the fill, readable by other; then Invalidate
// leaves only a new generation.
func checkLayout[K comparable](t *testing.T, srv *redistest.Server, c, other *cacheaside.Cache[K, string], key K, want, vkey string, lockSeen *atomic.Int64) {
	t.Helper()
	ctx := testContext(t)
	if got, err := c.Get(ctx, key); err != nil || got != want {
		t.Fatalf("Get(%v) = %q, %v; want %q, nil", key, got, err, want)
	}
	if lockSeen.Load() != 1 {
		t.Errorf("EXISTS %s during the load = %d, want 1", vkey+":lock", lockSeen.Load())
	}
	// The prefix's clock key (<prefix>{tags}:clock), created by the first
	// read (clockloss.go).
	clock := vkey[:strings.Index(vkey, "{")] + "{tags}:clock"
	if keys := allKeys(t, srv); !slices.Equal(keys, []string{vkey, vkey + ":gen", clock}) {
		t.Errorf("Redis keys after Get(%v) = %q, want exactly [%q %q %q] (the lock released)", key, keys, vkey, vkey+":gen", clock)
	}
	gen := srv.CLI(t, "GET", vkey+":gen")
	if got, ok := storedValue[string](t, srv, vkey); !ok || got != want {
		t.Errorf("Redis %s = %q (present %v), want %q", vkey, got, ok, want)
	}
	if got, err := other.Get(ctx, key); err != nil || got != want {
		t.Errorf("Get(%v) on a second Cache = %q, %v; want %q, nil", key, got, err, want)
	}
	if s := other.Stats(); s.Hits != 1 || s.Loads != 0 {
		t.Errorf("second Cache Stats() = %+v, want Hits 1, Loads 0 (read from %s)", s, vkey)
	}
	if err := c.Invalidate(ctx, key); err != nil {
		t.Fatalf("Invalidate(%v) = %v, want nil", key, err)
	}
	// The invalidation stream of the prefix (the durable feed) sorts first.
	stream := vkey[:strings.Index(vkey, "{")] + "invalidations"
	if keys := allKeys(t, srv); !slices.Equal(keys, []string{stream, vkey + ":gen", clock}) {
		t.Errorf("Redis keys after Invalidate(%v) = %q, want exactly [%q %q %q]", key, keys, stream, vkey+":gen", clock)
	}
	if ms := pttl(t, srv, vkey+":gen"); ms <= 0 {
		t.Errorf("PTTL %s = %d, want a positive TTL (generations expire)", vkey+":gen", ms)
	}
	if now := srv.CLI(t, "GET", vkey+":gen"); now == gen {
		t.Errorf("GET %s after Invalidate(%v) = %q, the generation before it; want a new one", vkey+":gen", key, now)
	}
}

// TestGetFailsOpenWhenRedisIsDown proves that a dead Redis is not the
// caller's problem: Get returns the loader's value with a nil error and the
// fault is counted. Both client kinds, as in TestCloseReleasesFillLock.
func TestGetFailsOpenWhenRedisIsDown(t *testing.T) {
	for _, ctxTimeout := range []bool{false, true} {
		t.Run(fmt.Sprintf("ContextTimeoutEnabled=%v", ctxTimeout), func(t *testing.T) {
			srv := redistest.Start(t)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: ctxTimeout})
			t.Cleanup(func() { _ = rdb.Close() })
			var loads atomic.Int64
			c := newCacheOn(t, rdb, func(ctx context.Context, id int64) (item, error) {
				loads.Add(1)
				return item{ID: id, Name: "from db"}, nil
			}, cacheaside.WithRedisTimeout(100*time.Millisecond)) // the default, not the tests' generous one
			srv.Kill()
			for id := range int64(3) {
				want := item{ID: id, Name: "from db"}
				ctx, cancel := context.WithTimeout(context.Background(), waitLimit) // a hang fails, not stalls, the test
				got, err := c.Get(ctx, id)
				cancel()
				if err != nil || got != want {
					t.Errorf("Get(%v) with Redis down = %v, %v; want %v, nil", id, got, err, want)
				}
			}
			if n := loads.Load(); n != 3 {
				t.Errorf("loader called %d times for 3 keys with Redis down, want 3", n)
			}
			if s := c.Stats(); s.RedisErrors == 0 {
				t.Errorf("Stats().RedisErrors = 0 after Gets with Redis down, want > 0 (%+v)", s)
			}
		})
	}
}

// TestGetAfterCloseReturnsErrClosed proves that Close ends the Cache: Get,
// Set and Invalidate return ErrClosed, and a second Close returns nil.
func TestGetAfterCloseReturnsErrClosed(t *testing.T) {
	srv := redistest.Start(t)
	var loads atomic.Int64
	c, err := cacheaside.New(srv.Client(t), func(ctx context.Context, id int64) (item, error) {
		loads.Add(1)
		return item{ID: id}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close() = %v, want nil", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close() = %v, want nil", err)
	}
	ctx := testContext(t)
	if got, err := c.Get(ctx, 1); !errors.Is(err, cacheaside.ErrClosed) {
		t.Errorf("Get(%v) after Close = %v, %v; want ErrClosed", 1, got, err)
	}
	if err := c.Set(ctx, 1, item{ID: 1}); !errors.Is(err, cacheaside.ErrClosed) {
		t.Errorf("Set(1) after Close = %v, want ErrClosed", err)
	}
	if err := c.Invalidate(ctx, 1); !errors.Is(err, cacheaside.ErrClosed) {
		t.Errorf("Invalidate(1) after Close = %v, want ErrClosed", err)
	}
	if n := loads.Load(); n != 0 {
		t.Errorf("loader called %d times after Close, want 0", n)
	}
}

// TestCloseCancelsLoadInFlight proves that Close cancels the context of a
// load in flight and returns only after the loader has returned.
func TestCloseCancelsLoadInFlight(t *testing.T) {
	srv := redistest.Start(t)
	if ended := closeDuringLoad(t, srv.Client(t)); !ended {
		t.Errorf("Close returned before the loader it cancelled had returned")
	}
}

// TestCloseReleasesFillLock proves that a load cut short by Close gives the
// fill lock back, so that other processes need not wait out its TTL: the
// release is the same as after any load that wrote nothing. Both client
// kinds: the default one, whose calls the cache runs on goroutines of its
// own, and one with ContextTimeoutEnabled, whose calls run inline.
func TestCloseReleasesFillLock(t *testing.T) {
	for _, ctxTimeout := range []bool{false, true} {
		t.Run(fmt.Sprintf("ContextTimeoutEnabled=%v", ctxTimeout), func(t *testing.T) {
			srv := redistest.Start(t)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: ctxTimeout})
			t.Cleanup(func() { _ = rdb.Close() })
			closeDuringLoad(t, rdb)
			if n := srv.CLI(t, "EXISTS", "ca:{7}:lock"); n != "0" {
				t.Errorf("EXISTS ca:{7}:lock after Close cancelled the load = %s, want 0: "+
					"the lock is left for its whole TTL (%v ms left) and stalls every other process on the key",
					n, pttl(t, srv, "ca:{7}:lock"))
			}
		})
	}
}

// closeDuringLoad starts Get(7) on a Cache over rdb whose loader waits for
// its context to end, closes the Cache while the load is in flight and
// checks that Close returns nil and the Get returns an error. It reports
// whether the loader had returned when Close did.
func closeDuringLoad(t *testing.T, rdb *redis.Client) (loaderEnded bool) {
	t.Helper()
	entered := make(chan struct{})
	var ended atomic.Bool
	c, err := cacheaside.New(rdb, func(ctx context.Context, id int64) (item, error) {
		close(entered)
		select {
		case <-ctx.Done():
		case <-time.After(waitLimit):
			return item{}, errors.New("loader context never cancelled")
		}
		time.Sleep(50 * time.Millisecond) // a loader that takes a moment to wind down
		ended.Store(true)
		return item{}, ctx.Err()
	}, cacheaside.WithLockTTL(time.Minute), cacheaside.WithRedisTimeout(redisTimeout))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })

	res := getAsync(testContext(t), c, int64(7))
	await(t, entered, "the loader to start")
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	if err := await(t, closed, "Close with a load in flight"); err != nil {
		t.Errorf("Close() = %v, want nil", err)
	}
	loaderEnded = ended.Load()
	if r := await(t, res, "the Get in flight"); r.err == nil {
		t.Errorf("Get(7) cut short by Close = %v, nil; want an error", r.val)
	}
	return loaderEnded
}

// TestStatsCountEveryGet proves that Hits + LocalHits + Misses equals the
// number of Gets that returned without a context error, with the other
// counters agreeing in a simple sequence.
func TestStatsCountEveryGet(t *testing.T) {
	srv := redistest.Start(t)
	var loads atomic.Int64
	c := newCache(t, srv, func(ctx context.Context, id int64) (item, error) {
		loads.Add(1)
		if id < 0 {
			return item{}, fmt.Errorf("product %d: %w", id, cacheaside.ErrNotFound)
		}
		return item{ID: id}, nil
	})
	ctx := testContext(t)
	counted := 0
	get := func(ctx context.Context, id int64) {
		_, err := c.Get(ctx, id)
		if ctx.Err() == nil {
			counted++
		}
		if err != nil && !errors.Is(err, cacheaside.ErrNotFound) && ctx.Err() == nil {
			t.Errorf("Get(%v) error = %v, want nil or ErrNotFound", id, err)
		}
	}
	get(ctx, 1)  // miss, load
	get(ctx, 1)  // hit
	get(ctx, 1)  // hit
	get(ctx, 2)  // miss, load
	get(ctx, -1) // miss, not found
	get(ctx, -1) // hit on the marker
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	get(cancelled, 3) // not counted, no load

	s := c.Stats()
	if got := s.Hits + s.LocalHits + s.Misses; got != uint64(counted) {
		t.Errorf("Hits + LocalHits + Misses = %d + %d + %d = %d, want %d Gets", s.Hits, s.LocalHits, s.Misses, got, counted)
	}
	if s.Hits != 3 || s.Misses != 3 || s.Loads != 3 || s.LockAcquired != 3 || s.LoadErrors != 0 {
		t.Errorf("Stats() = %+v, want Hits 3, Misses 3, Loads 3, LockAcquired 3, LoadErrors 0", s)
	}
	if n := loads.Load(); n != int64(s.Loads) {
		t.Errorf("loader called %d times, Stats().Loads = %d", n, s.Loads)
	}
}
