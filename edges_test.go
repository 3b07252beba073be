package cacheaside_test

import (
	"context"
	"errors"
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/envelope"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// The edges of the fill fence and of L1 consistency (issue 11): keys the
// cache never wrote, a loader that calls runtime.Goexit, a writer without
// an L1, hooks that panic. Each test attacks a promise of the README with
// real redis-servers.

// TestInvalidateFromCacheWithoutL1ReachesOtherL1: a fleet where the
// writer (an admin service, a batch job) builds its Cache without
// WithLocalCache, and the readers keep an L1 read first. "Invalidate and
// Set drop the key from this process's L1 and, through Redis pub/sub ...
// from the L1 of every other process of the fleet": the writer must
// publish whether or not it has an L1 of its own, or the readers serve the
// old value until their L1 TTL.
func TestInvalidateFromCacheWithoutL1ReachesOtherL1(t *testing.T) {
	for _, op := range []string{"Invalidate", "Set"} {
		t.Run(op, func(t *testing.T) {
			srv := redistest.Start(t)
			version, load := versioned()
			reader := newCache(t, srv, load, localFirst...)
			writer := newCache(t, srv, load) // no L1
			// sync has an L1 only to send a marker invalidation after the
			// writer's: pub/sub keeps the order of one channel, so once
			// the reader applied the marker it applied anything published
			// before it.
			sync := newCache(t, srv, load, localFirst...)
			applied := waitListening(t, srv, sync, reader, "probe")

			mustGetValue(t, reader, "k", 1, "reader fills Redis and its L1")
			mustGetValue(t, reader, "k", 1, "reader hits its L1")
			version.Store(2)
			ctx := testContext(t)
			switch op {
			case "Invalidate":
				if err := writer.Invalidate(ctx, "k"); err != nil {
					t.Fatalf("writer.Invalidate(k) = %v", err)
				}
			case "Set":
				if err := writer.Set(ctx, "k", 2); err != nil {
					t.Fatalf("writer.Set(k, 2) = %v", err)
				}
			}
			if err := sync.Invalidate(ctx, "marker"); err != nil {
				t.Fatalf("sync.Invalidate(marker) = %v", err)
			}
			waitApplied(t, reader, applied)
			mustGetValue(t, reader, "k", 2, "reader after writer."+op+" returned and the next message was applied")
		})
	}
}

// TestGarbageGenerationKey: a value of another Redis type under a key's
// generation (a user's own key under the prefix, a bug elsewhere) must not
// turn the key into one that every Get loads, fleet-wide and without the
// lock, for ever.
func TestGarbageGenerationKey(t *testing.T) {
	srv := redistest.Start(t)
	srv.CLI(t, "HSET", "ca:{k}:gen", "f", "v")
	db := newRow(t, "v")
	db.letGo()
	c := newCache(t, srv, db.load)
	ctx := testContext(t)
	for i := range 5 {
		if v, err := c.Get(ctx, "k"); err != nil || v != "v" {
			t.Fatalf("Get #%d = %q, %v; want %q, nil", i, v, err, "v")
		}
	}
	if n := db.calls.Load(); n != 1 {
		t.Errorf("5 sequential Gets of a key whose generation holds a hash made %d loads, want 1 (Stats %+v)", n, c.Stats())
	}
	if v, ok := storedValue[string](t, srv, "ca:{k}"); !ok || v != "v" {
		t.Errorf("Redis ca:{k} = %q (present %v), want %q: the key is never cached", v, ok, "v")
	}
}

// TestGarbageLockKey: a lock key the cache never wrote (no TTL: every
// lock the cache takes has one; or another Redis type) must not lock the
// key for ever, making every miss on every instance wait the whole lock
// wait and then load without the lock.
func TestGarbageLockKey(t *testing.T) {
	for _, tt := range []struct {
		name  string
		write []string
	}{
		{"string without TTL", []string{"SET", "ca:{k}:lock", "junk"}},
		{"list", []string{"RPUSH", "ca:{k}:lock", "junk"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.Start(t)
			srv.CLI(t, tt.write...)
			db := newRow(t, "v")
			db.letGo()
			c := newCache(t, srv, db.load, cacheaside.WithLockTTL(time.Second))
			ctx := testContext(t)
			if v, err := c.Get(ctx, "k"); err != nil || v != "v" {
				t.Fatalf("Get = %q, %v; want %q, nil", v, err, "v")
			}
			s := c.Stats()
			if s.LockWaitTimeouts != 0 || s.LockAcquired != 1 {
				t.Errorf("Stats: LockWaitTimeouts %d, LockAcquired %d; want 0, 1 (a lock nobody can ever release is not a lock)", s.LockWaitTimeouts, s.LockAcquired)
			}
			if n := srv.CLI(t, "EXISTS", "ca:{k}:lock"); n != "0" {
				t.Errorf("EXISTS ca:{k}:lock after the Get = %s, want 0: the key stays locked for ever", n)
			}
		})
	}
}

// putStale writes, as another process would have, a value of key s whose
// logical expiry has passed but which Redis keeps for a minute more
// (WithStaleIfError).
func putStale(t *testing.T, srv *redistest.Server, s, jsonPayload string) {
	t.Helper()
	env := envelope.Append(nil, envelope.Header{LoadTime: time.Millisecond, Expiry: time.Now().Add(-time.Second)}, []byte(jsonPayload))
	rdb := srv.Client(t)
	defer rdb.Close()
	if err := rdb.Set(context.Background(), valueKey(s), env, time.Minute).Err(); err != nil {
		t.Fatalf("SET %s: %v", valueKey(s), err)
	}
}

// goexitLoader calls runtime.Goexit (what t.FailNow or require.NoError
// do when they fail on a goroutine other than the test's) on every call
// after the first n.
func goexitLoader(n int64) (*atomic.Int64, cacheaside.LoadFunc[string, string]) {
	var calls atomic.Int64
	return &calls, func(ctx context.Context, k string) (string, error) {
		if calls.Add(1) > n {
			runtime.Goexit()
		}
		return "loaded", nil
	}
}

// TestLoaderGoexit: a loader that ends its goroutine with runtime.Goexit
// (a test helper's FailNow in a mocked loader) is not a panic, and
// recover does not see it. It must still end the flight with an error,
// on every path that runs a loader on a goroutine of the cache: never a
// zero value with a nil error, never a flight or Close that waits for
// ever.
func TestLoaderGoexit(t *testing.T) {
	check := func(t *testing.T, c *cacheaside.Cache[string, string], get func(ctx context.Context) (string, error)) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		v, err := get(ctx)
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("the call waited %v for a flight whose loader called runtime.Goexit", waitLimit)
		}
		if err == nil {
			t.Errorf("the call = %q, nil; want an error (its loader never returned a value)", v)
		}
		closed := make(chan error, 1)
		go func() { closed <- c.Close() }()
		select {
		case <-closed:
		case <-time.After(waitLimit):
			t.Fatalf("Close did not return within %v", waitLimit)
		}
	}
	t.Run("Get miss", func(t *testing.T) {
		srv := redistest.Start(t)
		_, load := goexitLoader(0)
		c := newCache(t, srv, load)
		check(t, c, func(ctx context.Context) (string, error) { return c.Get(ctx, "k") })
	})
	t.Run("GetMany miss", func(t *testing.T) {
		srv := redistest.Start(t)
		_, load := goexitLoader(0)
		c := newCache(t, srv, load)
		check(t, c, func(ctx context.Context) (string, error) {
			m, err := c.GetMany(ctx, []string{"k"})
			if err == nil && len(m) == 0 {
				return "", errors.New("no error, no value")
			}
			return m["k"], err
		})
	})
	t.Run("Get stale reload", func(t *testing.T) {
		srv := redistest.Start(t)
		putStale(t, srv, "k", `"old"`)
		_, load := goexitLoader(0)
		c := newCache(t, srv, load, cacheaside.WithStaleIfError(time.Minute))
		ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
		defer cancel()
		// Serving the stale value is a fine answer here; waiting for ever
		// is not.
		v, err := c.Get(ctx, "k")
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Get waited %v for a stale reload whose loader called runtime.Goexit", waitLimit)
		}
		t.Logf("Get = %q, %v", v, err)
		closed := make(chan error, 1)
		go func() { closed <- c.Close() }()
		select {
		case <-closed:
		case <-time.After(waitLimit):
			t.Fatalf("Close did not return within %v", waitLimit)
		}
	})
}

// panicCodec panics in Marshal and Unmarshal, or calls runtime.Goexit
// when goexit is set.
type panicCodec struct{ goexit bool }

func (c panicCodec) Marshal(v any) ([]byte, error) {
	if c.goexit {
		runtime.Goexit()
	}
	panic("codec: marshal")
}

func (c panicCodec) Unmarshal(b []byte, v any) error {
	if c.goexit {
		runtime.Goexit()
	}
	panic("codec: unmarshal")
}

// TestGetManyCodecPanics: a codec that panics on every call, reached on
// GetMany's concurrent single-key path (no batch loader: acquire finds a
// value it must decode, the fill must encode one; a stale value revived).
// No crash, no flight left open: every key answers, a later Get of each
// answers, and Close returns.
func TestGetManyCodecPanics(t *testing.T) {
	srv := redistest.Start(t)
	putStale(t, srv, "stale", `"old"`)
	rdb := srv.Client(t)
	if err := rdb.Set(context.Background(), valueKey("present"), envelope.Append(nil, envelope.Header{Expiry: time.Now().Add(time.Hour)}, []byte(`"x"`)), time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	_ = rdb.Close()
	c := newCache(t, srv, func(ctx context.Context, k string) (string, error) { return "loaded-" + k, nil },
		cacheaside.WithCodec(panicCodec{}), cacheaside.WithStaleIfError(time.Minute))
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	keys := []string{"stale", "present", "missing"}
	m, err := c.GetMany(ctx, keys)
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GetMany waited %v", waitLimit)
	}
	for _, k := range keys {
		if m[k] != "loaded-"+k {
			t.Errorf("GetMany = %v, %v; want every key loaded (the codec's panics are unreadable entries and unencodable values)", m, err)
			break
		}
	}
	for _, k := range keys {
		if v, err := c.Get(ctx, k); err != nil || v != "loaded-"+k {
			t.Errorf("Get(%q) after GetMany = %q, %v; want %q, nil", k, v, err, "loaded-"+k)
		}
	}
}

// dialPanicHook panics in every dial, as a buggy tracing hook might.
type dialPanicHook struct{ dials atomic.Int64 }

func (h *dialPanicHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		h.dials.Add(1)
		panic("dial hook exploded")
	}
}

func (*dialPanicHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (*dialPanicHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestDialHookPanicWithLocalCache: a go-redis dial hook that panics is a
// Redis fault on every path the cache calls Redis from, including the
// backplane's subscription (WithLocalCache), which dials a connection of
// its own on a goroutine of the cache: an unrecovered panic there kills
// the process.
func TestDialHookPanicWithLocalCache(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	h := &dialPanicHook{}
	rdb.AddHook(h)
	c := newCacheOn(t, rdb, func(ctx context.Context, k string) (string, error) { return "v", nil },
		cacheaside.WithLocalCache(10, time.Minute))
	if v, err := c.Get(testContext(t), "k"); err != nil || v != "v" {
		t.Errorf("Get = %q, %v; want %q, nil (from the loader)", v, err, "v")
	}
	// Let the backplane try to subscribe a few times (it retries after
	// 100 ms, 200 ms, ...).
	deadline := time.Now().Add(waitLimit)
	for h.dials.Load() < 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%d dials panicked", h.dials.Load())
}
