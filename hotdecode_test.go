package cacheaside_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// countingCodec is JSON that counts its Unmarshal calls.
type countingCodec struct {
	cacheaside.JSON
	unmarshals *atomic.Int64
}

func (c countingCodec) Unmarshal(data []byte, v any) error {
	c.unmarshals.Add(1)
	return c.JSON.Unmarshal(data, v)
}

// TestHotKeyDecodesOncePerValue: Redis hits on one key whose bytes do not
// change are decoded once, not once per read; a new value is decoded and
// served at once; reads of keys in turn are each decoded.
func TestHotKeyDecodesOncePerValue(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx := testContext(t)
	var unmarshals atomic.Int64
	c := newCacheOn(t, rdb, func(_ context.Context, k int) (string, error) { return faultValue(k), nil },
		cacheaside.WithCodec(countingCodec{unmarshals: &unmarshals}))
	for k := 1; k <= 3; k++ {
		mustGet(t, c, k)
	}

	gets := func(what string, keys []int, want func(k int) string) (decoded int64) {
		t.Helper()
		before, hits := unmarshals.Load(), c.Stats().Hits
		for _, k := range keys {
			if v, err := c.Get(ctx, k); err != nil || v != want(k) {
				t.Fatalf("%s: Get(%d) = %q, %v, want %q", what, k, v, err, want(k))
			}
		}
		if n := c.Stats().Hits - hits; n != uint64(len(keys)) {
			t.Fatalf("%s: %d of %d Gets hit Redis, want all", what, n, len(keys))
		}
		return unmarshals.Load() - before
	}
	same := make([]int, 50)
	for i := range same {
		same[i] = 1
	}
	if n := gets("one key", same, faultValue); n > 2 {
		t.Errorf("50 Redis hits on one unchanged key decoded %d times, want at most 2", n)
	}

	if err := c.Set(ctx, 1, "changed"); err != nil {
		t.Fatalf("Set(1) = %v, want nil", err)
	}
	changed := func(int) string { return "changed" }
	if n := gets("after Set", same, changed); n < 1 || n > 2 {
		t.Errorf("50 Redis hits on a key after its value changed decoded %d times, want 1 or 2", n)
	}

	inTurn := make([]int, 50)
	for i := range inTurn {
		inTurn[i] = 2 + i%2 // neither is the key the memo holds
	}
	if n := gets("keys in turn", inTurn, faultValue); n != int64(len(inTurn)) {
		t.Errorf("50 Redis hits on two keys in turn decoded %d times, want 50", n)
	}
}

// TestHotKeyDecodeUnderConcurrency: goroutines reading a hot key while its
// value is rewritten, and another key beside it, always get a value that
// was stored for the key they asked for (run with -race).
func TestHotKeyDecodeUnderConcurrency(t *testing.T) {
	_, rdb, ctx := startWithClient(t)
	c := newCacheOn(t, rdb, func(_ context.Context, k int) (string, error) { return faultValue(k), nil })
	const versions = 200
	var wg sync.WaitGroup
	var stop atomic.Bool
	var seen sync.Map // values read of key 1
	for g := range 8 {
		wg.Go(func() {
			for !stop.Load() {
				k := 1 + g%2
				v, err := c.Get(ctx, k)
				if err != nil {
					t.Errorf("Get(%d) = %v", k, err)
					return
				}
				if k == 2 && v != faultValue(2) {
					t.Errorf("Get(2) = %q, want %q", v, faultValue(2))
					return
				}
				if k == 1 {
					seen.Store(v, true)
				}
			}
		})
	}
	written := map[string]bool{faultValue(1): true}
	for i := range versions {
		v := "version-" + string(rune('a'+i%26)) + "-" + faultValue(i)
		written[v] = true
		if err := c.Set(ctx, 1, v); err != nil {
			t.Fatalf("Set(1) = %v", err)
		}
	}
	stop.Store(true)
	wg.Wait()
	seen.Range(func(v, _ any) bool {
		if !written[v.(string)] {
			t.Errorf("Get(1) = %q, a value never stored for key 1", v)
		}
		return true
	})
	if v, err := c.Get(ctx, 1); err != nil || !written[v] {
		t.Errorf("Get(1) = %q, %v after the writes", v, err)
	}
}

// startWithClient starts a redis-server of the test's own and returns it
// with a ContextTimeoutEnabled client of it, closed when the test ends,
// and the test's context.
func startWithClient(t *testing.T) (*redistest.Server, *redis.Client, context.Context) {
	t.Helper()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	return srv, rdb, testContext(t)
}
