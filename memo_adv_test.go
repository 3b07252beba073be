package cacheaside_test

// Adversarial tests of the decode memo (internal/decodememo, codec.go's
// decodeResult) and of the hot key's flights without the leader's yield
// (get.go). Real redis-server processes only (internal/redistest).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/envelope"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// advVersions is a loader whose value for a key is "<base>" until bumped,
// then "<base>-<n>": the value a reload must return.
type advVersions struct {
	mu    sync.Mutex
	base  map[int]string
	ver   map[int]int
	tags  map[int]string
	loads atomic.Int64
}

func (a *advVersions) value(k int) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n := a.ver[k]; n > 0 {
		return a.base[k] + "-" + strconv.Itoa(n)
	}
	return a.base[k]
}

func (a *advVersions) bump(k int) {
	a.mu.Lock()
	a.ver[k]++
	a.mu.Unlock()
}

func (a *advVersions) load(ctx context.Context, k int) (string, error) {
	a.loads.Add(1)
	a.mu.Lock()
	tag := a.tags[k]
	a.mu.Unlock()
	if tag != "" {
		cacheaside.Tag(ctx, tag)
	}
	return a.value(k), nil
}

// TestAdvMemoSamePayloadDifferentEnvelopes: two keys whose payloads are the
// same bytes (one tagged, one not) share the memo entry; Invalidate,
// InvalidateTag, Clear and Set of either must still be honoured by the
// next Get of each key, with and without L1.
func TestAdvMemoSamePayloadDifferentEnvelopes(t *testing.T) {
	for _, l1 := range []bool{false, true} {
		t.Run(fmt.Sprintf("l1=%v", l1), func(t *testing.T) {
			srv := redistest.Start(t)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
			t.Cleanup(func() { _ = rdb.Close() })
			ctx := testContext(t)
			ld := &advVersions{base: map[int]string{1: "same", 2: "same", 3: "same"}, ver: map[int]int{}, tags: map[int]string{1: "t1"}}
			var opts []cacheaside.Option
			if l1 {
				opts = append(opts, cacheaside.WithL1(cacheaside.L1{Size: 100, TTL: time.Minute}))
			}
			c := newCacheOn(t, rdb, ld.load, opts...)
			check := func(what string, k int) {
				t.Helper()
				if v, err := c.Get(ctx, k); err != nil || v != ld.value(k) {
					t.Fatalf("%s: Get(%d) = %q, %v, want %q", what, k, v, err, ld.value(k))
				}
			}
			warm := func() {
				for range 5 {
					for k := 1; k <= 3; k++ {
						check("warm", k)
					}
					check("warm", 2)
					check("warm", 2)
				}
			}
			warm()
			ld.bump(1)
			if err := c.InvalidateTag(ctx, "t1"); err != nil {
				t.Fatal(err)
			}
			check("after InvalidateTag(t1)", 1)
			check("after InvalidateTag(t1)", 2)
			warm()
			ld.bump(2)
			if err := c.Invalidate(ctx, 2); err != nil {
				t.Fatal(err)
			}
			check("after Invalidate(2)", 2)
			check("after Invalidate(2)", 3)
			warm()
			ld.bump(1)
			ld.bump(2)
			ld.bump(3)
			if err := c.Clear(ctx); err != nil {
				t.Fatal(err)
			}
			for k := 1; k <= 3; k++ {
				check("after Clear", k)
			}
			// Set key 3 to the bytes key 2 holds, then to something else.
			warm()
			if err := c.Set(ctx, 3, ld.value(2)); err != nil {
				t.Fatal(err)
			}
			mustGetValue(t, c, 3, ld.value(2), "after Set(3, value of 2)")
			mustGetValue(t, c, 3, ld.value(2), "after Set(3, value of 2)")
			if err := c.Set(ctx, 3, "other"); err != nil {
				t.Fatal(err)
			}
			mustGetValue(t, c, 3, "other", "after Set(3, other)")
			check("after Set(3, other)", 2)
		})
	}
}

// TestAdvMemoForeignEntrySamePayload: a Cache memoizes payload P; another
// Cache (another V, same prefix) writes P under another key. The first
// Cache must not serve its memoized value for the foreign entry (the
// fingerprint is checked before the memo); a v0.1 entry (no fingerprint)
// with payload P decodes as the codec would.
func TestAdvMemoForeignEntrySamePayload(t *testing.T) {
	srv, rdb, ctx := startWithClient(t)
	a := newCacheOn(t, rdb, func(_ context.Context, k int) (string, error) { return "loaded-" + strconv.Itoa(k), nil })
	b := newCacheOn(t, rdb, func(_ context.Context, k int) ([]byte, error) { return []byte("hi"), nil })
	p, _ := json.Marshal([]byte("hi")) // "aGk="
	var s string
	_ = json.Unmarshal(p, &s)
	if err := a.Set(ctx, 1, s); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		mustGetValue(t, a, 1, s, "a's own key")
	}
	if err := b.Set(ctx, 2, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	corrupt := a.Stats().Corrupt
	mustGetValue(t, a, 2, "loaded-2", "a reads b's entry with the memoized payload")
	if a.Stats().Corrupt == corrupt {
		t.Errorf("a's read of b's entry was not counted as corrupt")
	}
	// A v0.1 entry (Type 0) with the memoized payload under key 3.
	// The clock of a's own entry, so that only the fingerprint is missing.
	h1, _, _ := rawEntry(t, srv, valueKey("1"))
	env := envelope.Append(nil, envelope.Header{Expiry: time.Now().Add(time.Minute), Clock: h1.Clock, Stored: time.Now()}, p)
	if err := rdb.Set(ctx, valueKey("3"), env, time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	mustGetValue(t, a, 3, s, "a v0.1 entry with the memoized payload")
	// b must decode its own entries, never a's memo (per Cache).
	for range 3 {
		if v, err := b.Get(ctx, 2); err != nil || !bytes.Equal(v, []byte("hi")) {
			t.Fatalf("b.Get(2) = %q, %v", v, err)
		}
	}
}

// advFlakyCodec is JSON whose Unmarshal fails, panics or exits the
// goroutine for chosen payloads, and counts its calls.
type advFlakyCodec struct {
	cacheaside.JSON
	calls  *atomic.Int64
	mode   *atomic.Value // string: "", "error", "panic", "goexit", "error2"
	target string        // the payload the mode applies to
}

func (c advFlakyCodec) Unmarshal(data []byte, v any) error {
	n := c.calls.Add(1)
	if string(data) == c.target {
		switch c.mode.Load().(string) {
		case "error":
			return errors.New("flaky: rejected")
		case "error2":
			if n%2 == 0 {
				return errors.New("flaky: every 2nd call")
			}
		case "panic":
			panic("flaky: panic")
		case "goexit":
			runtime.Goexit()
		}
	}
	return c.JSON.Unmarshal(data, v)
}

// TestAdvMemoCodecFaults: a codec that rejects or panics on a payload is
// never memoized for it, and after the fault stops the value is served
// again; a codec failing on every 2nd call never hands out a wrong value.
func TestAdvMemoCodecFaults(t *testing.T) {
	for _, mode := range []string{"error", "panic", "error2"} {
		t.Run(mode, func(t *testing.T) {
			srv := redistest.Start(t)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
			t.Cleanup(func() { _ = rdb.Close() })
			ctx := testContext(t)
			var calls atomic.Int64
			var m atomic.Value
			m.Store("")
			codec := advFlakyCodec{calls: &calls, mode: &m, target: `"bad"`}
			var loads atomic.Int64
			c := newCacheOn(t, rdb, func(_ context.Context, k int) (string, error) {
				loads.Add(1)
				if k == 1 {
					return "bad", nil
				}
				return "good-" + strconv.Itoa(k), nil
			}, cacheaside.WithCodec(codec))
			for range 3 {
				mustGetValue(t, c, 1, "bad", "before the fault")
				mustGetValue(t, c, 2, "good-2", "before the fault")
			}
			m.Store(mode)
			for i := range 6 {
				v, err := c.Get(ctx, 1)
				if err == nil && v != "bad" {
					t.Fatalf("Get(1) #%d during %s = %q, want bad or an error", i, mode, v)
				}
				mustGetValue(t, c, 2, "good-2", "during the fault")
			}
			m.Store("")
			mustGetValue(t, c, 1, "bad", "after the fault")
			mustGetValue(t, c, 1, "bad", "after the fault")
		})
	}
}

// TestAdvGoexitCodecOnHitWedgesKey: a codec that calls runtime.Goexit for
// one payload (a t.FailNow in a test codec, say) on the leader's inline
// Redis read kills the leader before it finishes its flight: every later
// Get of the key joins the dead flight and waits until its context ends,
// although the codec behaves again. A panic there is recovered (unmarshal)
// and the flight of a goroutine is finished in a defer (startFlight); the
// inline hit path has neither.
func TestAdvGoexitCodecOnHitWedgesKey(t *testing.T) {
	_, rdb, ctx := startWithClient(t)
	var calls atomic.Int64
	var m atomic.Value
	m.Store("")
	codec := advFlakyCodec{calls: &calls, mode: &m, target: `"exit"`}
	c := newCacheOn(t, rdb, func(_ context.Context, k int) (string, error) { return "exit", nil }, cacheaside.WithCodec(codec))
	mustGetValue(t, c, 1, "exit", "before")
	m.Store("goexit")
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.Get(ctx, 1) // never returns: the codec ends the goroutine
	}()
	<-done
	m.Store("")
	gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	v, err := c.Get(gctx, 1)
	if err != nil || v != "exit" {
		t.Errorf("Get(1) after a codec's Goexit (codec healthy again) = %q, %v, want %q, nil", v, err, "exit")
	}
}

// TestAdvMemoConcurrentWritesAndReads: 64 goroutines read a hot key, its
// neighbour (whose bytes equal an older value of the hot key), GetMany of
// duplicates, while the test Sets, Invalidates and Clears; every value
// read was stored for its key, and after each Set a Get of this process
// returns it (read-your-write), with L1 on or off, early refresh and
// stale serving.
func TestAdvMemoConcurrentWritesAndReads(t *testing.T) {
	configs := map[string][]cacheaside.Option{
		"plain": nil,
		"l1":    {cacheaside.WithL1(cacheaside.L1{Size: 100, TTL: time.Minute})},
		"l1-refresh-stale": {
			cacheaside.WithL1(cacheaside.L1{Size: 100, TTL: time.Minute}),
			cacheaside.WithEarlyRefresh(5), cacheaside.WithTTL(200 * time.Millisecond),
			cacheaside.WithServeStale(cacheaside.ServeStale{MaxStale: time.Second, SoftTimeout: 20 * time.Millisecond}),
		},
	}
	for name, opts := range configs {
		t.Run(name, func(t *testing.T) {
			srv := redistest.Start(t)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true, PoolSize: 16})
			t.Cleanup(func() { _ = rdb.Close() })
			ctx := testContext(t)
			// Every value ever written or loaded for key 1; key 2 always
			// holds "v-0", key 1's first value.
			var mu sync.Mutex
			written := map[string]bool{"v-0": true}
			var cur atomic.Value
			cur.Store("v-0")
			c := newCacheOn(t, rdb, func(_ context.Context, k int) (string, error) {
				if k == 2 {
					return "v-0", nil
				}
				return cur.Load().(string), nil
			}, opts...)
			var stop atomic.Bool
			var wg sync.WaitGroup
			var bad atomic.Value
			fail := func(s string) { bad.CompareAndSwap(nil, s) }
			for g := range 64 {
				wg.Go(func() {
					for i := 0; !stop.Load(); i++ {
						switch {
						case g%8 == 7 && i%4 == 0:
							out, err := c.GetMany(ctx, []int{1, 2, 1, 2, 1})
							if err != nil {
								fail(fmt.Sprintf("GetMany: %v", err))
								return
							}
							if out[2] != "v-0" {
								fail(fmt.Sprintf("GetMany[2] = %q", out[2]))
							}
							mu.Lock()
							ok := written[out[1]]
							mu.Unlock()
							if !ok {
								fail(fmt.Sprintf("GetMany[1] = %q never stored", out[1]))
							}
						case g%2 == 0:
							v, err := c.Get(ctx, 2)
							if err != nil || v != "v-0" {
								fail(fmt.Sprintf("Get(2) = %q, %v", v, err))
							}
						default:
							v, err := c.Get(ctx, 1)
							mu.Lock()
							ok := written[v]
							mu.Unlock()
							if err != nil || !ok {
								fail(fmt.Sprintf("Get(1) = %q, %v (never stored)", v, err))
							}
						}
						if i%16 == 0 {
							runtime.Gosched()
						}
					}
				})
			}
			deadline := time.Now().Add(4 * time.Second)
			for i := 1; time.Now().Before(deadline); i++ {
				v := "v-" + strconv.Itoa(i%3) // values repeat: bytes seen before
				mu.Lock()
				written[v] = true
				mu.Unlock()
				switch i % 4 {
				case 0, 1:
					if err := c.Set(ctx, 1, v); err != nil {
						t.Fatalf("Set: %v", err)
					}
				case 2:
					cur.Store(v)
					if err := c.Invalidate(ctx, 1); err != nil {
						t.Fatalf("Invalidate: %v", err)
					}
				case 3:
					cur.Store(v)
					if err := c.Clear(ctx); err != nil {
						t.Fatalf("Clear: %v", err)
					}
				}
				if got, err := c.Get(ctx, 1); err != nil || got != v {
					t.Fatalf("write %d: Get(1) right after writing %q = %q, %v", i, v, got, err)
				}
				if got, err := c.Get(ctx, 2); err != nil || got != "v-0" {
					t.Fatalf("write %d: Get(2) = %q, %v", i, got, err)
				}
				time.Sleep(2 * time.Millisecond)
			}
			stop.Store(true)
			wg.Wait()
			if s := bad.Load(); s != nil {
				t.Fatal(s)
			}
		})
	}
}

// TestAdvHotKeyFlightsCoalesce: 64 goroutines on one key, no L1: Redis
// reads per Get (logged) and every Get answers the stored value.
func TestAdvHotKeyFlightsCoalesce(t *testing.T) {
	srv, rdb, ctx := startWithClient(t)
	c := newCacheOn(t, rdb, func(_ context.Context, k int) (string, error) { return faultValue(k), nil })
	mustGet(t, c, 1)
	srv.CLI(t, "CONFIG", "RESETSTAT")
	const workers, per = 64, 300
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range workers {
		wg.Go(func() {
			for range per {
				if v, err := c.Get(ctx, 1); err != nil || v != faultValue(1) {
					bad.Add(1)
				}
			}
		})
	}
	wg.Wait()
	reads := redisReads(t, srv)
	t.Logf("%d Gets, %d Redis reads: %.1f Gets per read", workers*per, reads, float64(workers*per)/float64(reads))
	if bad.Load() != 0 {
		t.Errorf("%d Gets returned a wrong value or error", bad.Load())
	}
	if reads > workers*per/2 {
		t.Errorf("%d Redis reads for %d Gets of one key: flights do not coalesce", reads, workers*per)
	}
}

// TestAdvHotKeyFreezeAndKill: a 64-goroutine hot key while Redis is frozen
// (SIGSTOP) mid-flight, thawed, then killed (-9) and restarted: every Get
// returns the loader's value or its context's error in time, none hangs,
// and Close returns promptly (goleak in TestMain checks the goroutines).
func TestAdvHotKeyFreezeAndKill(t *testing.T) {
	t.Run("l1", func(t *testing.T) {
		advHotKeyFreezeAndKill(t, cacheaside.WithL1(cacheaside.L1{Size: 100, TTL: time.Minute}))
	})
	t.Run("no-l1", func(t *testing.T) { advHotKeyFreezeAndKill(t) })
}

func advHotKeyFreezeAndKill(t *testing.T, opts ...cacheaside.Option) {
	srv := redistest.Start(t)
	rdb := newFaultClient(t, srv.Addr())
	c := newFaultCache(t, rdb, func(_ context.Context, k int) (string, error) { return faultValue(k), nil }, opts...)
	mustGet(t, c, 1)
	var stop atomic.Bool
	var wg sync.WaitGroup
	var bad atomic.Value
	var slowest atomic.Int64
	for range 64 {
		wg.Go(func() {
			for !stop.Load() {
				gctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				start := time.Now()
				v, err := c.Get(gctx, 1)
				took := time.Since(start)
				cancel()
				for old := slowest.Load(); int64(took) > old && !slowest.CompareAndSwap(old, int64(took)); old = slowest.Load() {
				}
				if err != nil || v != faultValue(1) {
					bad.CompareAndSwap(nil, fmt.Sprintf("Get(1) = %q, %v after %v", v, err, took))
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	thaw := freezeServer(t, srv)
	time.Sleep(1500 * time.Millisecond)
	thaw()
	time.Sleep(500 * time.Millisecond)
	srv.Kill()
	time.Sleep(1000 * time.Millisecond)
	srv.Start()
	recoverServer(t, srv, rdb)
	time.Sleep(500 * time.Millisecond)
	stop.Store(true)
	waited := make(chan struct{})
	go func() { wg.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(10 * time.Second):
		t.Fatal("Gets still running 10s after the storm stopped")
	}
	if s := bad.Load(); s != nil {
		t.Error(s)
	}
	t.Logf("slowest Get: %v", time.Duration(slowest.Load()))
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hangs")
	}
}

// TestAdvGoexitCodecInFlightGoroutine: a codec's runtime.Goexit on a
// flight's goroutine (here: the read of a value another process filled
// while this one waited for its fill lock) ends the flight through
// startFlight's deferred Finish with a zero result: the caller gets the
// zero V and a nil error, a value never stored, instead of an error.
func TestAdvGoexitCodecInFlightGoroutine(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	var callsA, callsB atomic.Int64
	var modeA, modeB atomic.Value
	modeA.Store("")
	modeB.Store("")
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	b := newCache(t, srv, func(_ context.Context, k int) (string, error) {
		once.Do(func() { close(started) })
		<-release
		return "exit", nil
	}, cacheaside.WithCodec(advFlakyCodec{calls: &callsB, mode: &modeB, target: `"exit"`}))
	a := newCache(t, srv, func(_ context.Context, k int) (string, error) { return "exit", nil },
		cacheaside.WithCodec(advFlakyCodec{calls: &callsA, mode: &modeA, target: `"exit"`}))
	bDone := getAsync(ctx, b, 1)
	<-started // b holds the fill lock and loads
	modeA.Store("goexit")
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	aDone := getAsync(gctx, a, 1)
	time.Sleep(300 * time.Millisecond) // a waits for b's fill
	close(release)
	if o := await(t, bDone, "b's Get"); o.err != nil || o.val != "exit" {
		t.Fatalf("b.Get(1) = %q, %v", o.val, o.err)
	}
	o := await(t, aDone, "a's Get")
	modeA.Store("")
	if o.err == nil && o.val != "exit" {
		t.Errorf("a.Get(1) after its codec's Goexit on a flight goroutine = %q, nil error: a value never stored (codec calls %d)", o.val, callsA.Load())
	} else {
		t.Logf("a.Get(1) = %q, %v", o.val, o.err)
	}
}

// TestAdvMemoLargeHotValue: a 1 MB value read by 4 goroutines while it is
// rewritten with values of the same length differing in one byte: no
// read returns a value never stored, and after the last Set every Get
// returns it.
func TestAdvMemoLargeHotValue(t *testing.T) {
	_, rdb, ctx := startWithClient(t)
	big := func(i int) []byte {
		b := bytes.Repeat([]byte("x"), 1<<20)
		b[len(b)/2] = byte('a' + i%26) // same length, same hash prefix, one byte apart
		return b
	}
	c := newCacheOn(t, rdb, func(_ context.Context, k int) ([]byte, error) { return big(0), nil })
	var mu sync.Mutex
	written := map[byte]bool{'a': true}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var bad atomic.Value
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				v, err := c.Get(ctx, 1)
				if err != nil || len(v) != 1<<20 {
					bad.CompareAndSwap(nil, fmt.Sprintf("Get(1): len %d, %v", len(v), err))
					return
				}
				mid := v[len(v)/2]
				mu.Lock()
				ok := written[mid]
				mu.Unlock()
				if !ok || v[0] != 'x' || v[len(v)-1] != 'x' {
					bad.CompareAndSwap(nil, fmt.Sprintf("Get(1) = value with middle byte %q, never stored", mid))
				}
			}
		})
	}
	for i := 1; i <= 10; i++ {
		mu.Lock()
		written[byte('a'+i%26)] = true
		mu.Unlock()
		if err := c.Set(ctx, 1, big(i)); err != nil {
			t.Fatal(err)
		}
		if v, err := c.Get(ctx, 1); err != nil || !bytes.Equal(v, big(i)) {
			t.Fatalf("Get(1) after Set #%d: wrong value, %v", i, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	if s := bad.Load(); s != nil {
		t.Fatal(s)
	}
}

// TestAdvMemoSharesValuesAcrossKeys: two keys whose payloads are equal
// never get the same decoded value (map, backing array) from the memo,
// with no L1: a caller that appends to the slice it got from key 1
// (append(v, x): no element of v is modified) must not write into the
// backing array that key 2's callers hold. It failed with the first memo,
// which matched bytes only.
func TestAdvMemoSharesValuesAcrossKeys(t *testing.T) {
	_, rdb, ctx := startWithClient(t)
	c := newCacheOn(t, rdb, func(_ context.Context, k int) ([]int, error) { return []int{1, 2, 3}, nil })
	for range 3 {
		for k := 1; k <= 2; k++ {
			if _, err := c.Get(ctx, k); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, _ = c.Get(ctx, 2)
	_, _ = c.Get(ctx, 2) // key 2's bytes decoded twice in a row: memoized
	v1, _ := c.Get(ctx, 1)
	v2, _ := c.Get(ctx, 2)
	x := append(v1, 100)
	y := append(v2, 200)
	shared := len(v1) > 0 && len(v2) > 0 && &v1[0] == &v2[0]
	t.Logf("keys 1 and 2 share a backing array: %v; x = %v, y = %v", shared, x, y)
	if shared {
		t.Errorf("Get(1) and Get(2) share a backing array: append(Get(1), 100) = %v, append(Get(2), 200) = %v", x, y)
	}
}

// advRawCodec stores strings as their bytes: "" is an empty payload.
type advRawCodec struct{}

func (advRawCodec) Marshal(v any) ([]byte, error) { return []byte(v.(string)), nil }
func (advRawCodec) Unmarshal(data []byte, v any) error {
	*v.(*string) = string(data)
	return nil
}

// TestAdvMemoEmptyPayloadVersusNotFound: an empty value memoized (empty
// payload) and a not-found marker (empty payload, NotFound flag) of
// another key: the marker stays ErrNotFound, the value stays "".
func TestAdvMemoEmptyPayloadVersusNotFound(t *testing.T) {
	_, rdb, ctx := startWithClient(t)
	c, err := cacheaside.New(rdb, func(_ context.Context, k int) (string, error) {
		if k == 2 {
			return "", cacheaside.ErrNotFound
		}
		return "", nil
	}, cacheaside.WithCodec(advRawCodec{}), cacheaside.WithRedisTimeout(redisTimeout))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	for range 4 {
		if v, err := c.Get(ctx, 1); err != nil || v != "" {
			t.Fatalf("Get(1) = %q, %v", v, err)
		}
		if v, err := c.Get(ctx, 2); !errors.Is(err, cacheaside.ErrNotFound) {
			t.Fatalf("Get(2) = %q, %v, want ErrNotFound", v, err)
		}
	}
}

// TestAdvGoexitLoader: a loader that calls runtime.Goexit (t.FailNow in
// a test's loader) ends the flight's goroutine; the caller must not get a
// zero value with a nil error (the same root cause as
// TestAdvGoexitCodecInFlightGoroutine: startFlight's deferred Finish
// publishes the zero result).
func TestAdvGoexitLoader(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	c := newCache(t, srv, func(_ context.Context, k int) (string, error) {
		if k == 1 {
			runtime.Goexit()
		}
		return faultValue(k), nil
	})
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := c.Get(gctx, 1)
	if err == nil {
		t.Errorf("Get(1) with a loader that called runtime.Goexit = %q, nil error: a value never loaded", v)
	} else {
		t.Logf("Get(1) = %q, %v", v, err)
	}
}

// advExitMarshal is JSON whose Marshal calls runtime.Goexit while armed.
type advExitMarshal struct {
	cacheaside.JSON
	armed *atomic.Bool
}

func (c advExitMarshal) Marshal(v any) ([]byte, error) {
	if c.armed.Load() {
		runtime.Goexit()
	}
	return c.JSON.Marshal(v)
}

// TestAdvGoexitCodecMarshalOnFill: a codec whose Marshal calls
// runtime.Goexit in the fill of a miss (a flight goroutine): the caller
// gets the zero V and a nil error, although the loader returned a value.
func TestAdvGoexitCodecMarshalOnFill(t *testing.T) {
	srv := redistest.Start(t)
	ctx := testContext(t)
	var armed atomic.Bool
	armed.Store(true)
	c := newCache(t, srv, func(_ context.Context, k int) (string, error) { return faultValue(k), nil },
		cacheaside.WithCodec(advExitMarshal{armed: &armed}))
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := c.Get(gctx, 1)
	armed.Store(false)
	if err == nil && v != faultValue(1) {
		t.Errorf("Get(1) with a Marshal that called runtime.Goexit = %q, nil error: neither the loaded value nor an error", v)
	} else {
		t.Logf("Get(1) = %q, %v", v, err)
	}
	// The dead fill's lock: another process's Get of the key, and this
	// one's, must not wait for it for ever.
	other := newCache(t, srv, func(_ context.Context, k int) (string, error) { return faultValue(k), nil },
		cacheaside.WithCodec(advExitMarshal{armed: &armed}))
	for _, cc := range []*cacheaside.Cache[int, string]{other, c} {
		start := time.Now()
		octx, ocancel := context.WithTimeout(ctx, 8*time.Second)
		v, err := cc.Get(octx, 1)
		ocancel()
		if err != nil || v != faultValue(1) {
			t.Errorf("Get(1) after the dead fill = %q, %v after %v", v, err, time.Since(start))
		} else {
			t.Logf("Get(1) after the dead fill took %v", time.Since(start))
		}
	}
}
