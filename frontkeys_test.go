package cacheaside_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// The read first's index by the caller's key (l1.Front) compares and
// hashes K itself, where every other step of a Get sees only the Redis key
// WithKeyFunc makes of it. These tests hold it to what a Get did before
// it: for a K whose == does not mean "same Redis key" (a float's -0 and
// +0) or that == cannot compare (an interface holding a slice), a Get
// answers as the lookup by Redis key would.

// readFirstPair returns a read-first Cache of srv and a second one
// subscribed to the same channel, so that the first's L1 entries are
// trusted (waitListening).
func readFirstPair[K comparable, V any](t *testing.T, srv *redistest.Server, load cacheaside.LoadFunc[K, V], probe K, opts ...cacheaside.Option) *cacheaside.Cache[K, V] {
	t.Helper()
	opts = append([]cacheaside.Option{cacheaside.WithL1(cacheaside.L1{Size: 64, TTL: time.Minute})}, opts...)
	c := newCache(t, srv, load, opts...)
	other := newCache(t, srv, load, opts...)
	waitListening(t, srv, other, c, probe)
	return c
}

// TestReadFirstSignedZeroKeys: -0.0 == +0.0 in Go, but WithKeyFunc may
// (and strconv does) make two Redis keys of them, loaded apart. A Get of
// -0 after one of +0 returns -0's value, not +0's from the index.
func TestReadFirstSignedZeroKeys(t *testing.T) {
	srv := redistest.Start(t)
	load := func(_ context.Context, k float64) (string, error) {
		return "loaded " + strconv.FormatFloat(k, 'g', -1, 64), nil
	}
	c := readFirstPair(t, srv, load, 1.5, cacheaside.WithKeyFunc(func(k float64) string {
		return strconv.FormatFloat(k, 'g', -1, 64)
	}))
	negZero := math.Copysign(0, -1)
	mustGetValue(t, c, 0.0, "loaded 0", "first Get")
	mustGetValue(t, c, 0.0, "loaded 0", "Get again (from L1)")
	mustGetValue(t, c, negZero, "loaded -0", "Get of -0 after +0")
	mustGetValue(t, c, negZero, "loaded -0", "Get of -0 again")
	mustGetValue(t, c, 0.0, "loaded 0", "Get of +0 after -0")
}

// TestReadFirstUnhashableInterfaceKeys: a K of interface type is
// comparable, but a value whose dynamic type is not (a slice) panics when
// hashed or compared. WithKeyFunc encodes it: Get must not panic.
func TestReadFirstUnhashableInterfaceKeys(t *testing.T) {
	srv := redistest.Start(t)
	load := func(_ context.Context, k any) (string, error) { return fmt.Sprint("loaded ", k), nil }
	c := readFirstPair[any, string](t, srv, load, "probe", cacheaside.WithKeyFunc(func(k any) string { return fmt.Sprint(k) }))
	for _, k := range []any{"a", 1, []int{1, 2}, []int{1, 2}, map[string]int{"x": 1}} {
		func() {
			defer func() {
				if p := recover(); p != nil {
					t.Errorf("Get(%v) panicked: %v", k, p)
				}
			}()
			want := fmt.Sprint("loaded ", k)
			if v, err := c.Get(testContext(t), k); err != nil || v != want {
				t.Errorf("Get(%v) = %q, %v; want %q", k, v, err, want)
			}
		}()
	}
}

// TestReadFirstTwoKeysOneRedisKey: WithKeyFunc may map two keys to one
// Redis key; each then has its own slot in the index, on the same L1
// entry. An Invalidate through either hides the entry from both.
func TestReadFirstTwoKeysOneRedisKey(t *testing.T) {
	srv := redistest.Start(t)
	var version atomic.Int64
	version.Store(1)
	load := func(_ context.Context, k string) (int64, error) { return version.Load(), nil }
	c := readFirstPair(t, srv, load, "probe", cacheaside.WithKeyFunc(strings.ToLower))
	for _, k := range []string{"K", "k", "K", "k"} {
		mustGetValue(t, c, k, 1, "before the Invalidate")
	}
	hits := c.Stats().LocalHits
	mustGetValue(t, c, "K", 1, "again")
	mustGetValue(t, c, "k", 1, "again")
	if n := c.Stats().LocalHits - hits; n != 2 {
		t.Fatalf("%d of 2 Gets of K and k answered from L1, want 2", n)
	}
	version.Store(2)
	if err := c.Invalidate(testContext(t), "K"); err != nil {
		t.Fatal(err)
	}
	mustGetValue(t, c, "k", 2, "after Invalidate(K)")
	mustGetValue(t, c, "K", 2, "after Invalidate(K)")
}

// TestReadFirstHitAfterCancelAndClose: a key the index holds is not
// answered to a Get whose context is done (its error instead), nor after
// Close (ErrClosed).
func TestReadFirstHitAfterCancelAndClose(t *testing.T) {
	srv := redistest.Start(t)
	load := func(_ context.Context, k int) (int, error) { return k, nil }
	c := readFirstPair(t, srv, load, -1)
	mustGetValue(t, c, 7, 7, "fill")
	hits := c.Stats().LocalHits
	mustGetValue(t, c, 7, 7, "from L1")
	if c.Stats().LocalHits != hits+1 {
		t.Fatal("the second Get(7) was not answered from L1")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if v, err := c.Get(ctx, 7); !errors.Is(err, context.Canceled) {
		t.Errorf("Get(7) with a canceled context = %v, %v; want context.Canceled", v, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if v, err := c.Get(context.Background(), 7); !errors.Is(err, cacheaside.ErrClosed) {
		t.Errorf("Get(7) after Close = %v, %v; want ErrClosed", v, err)
	}
}
