package cacheaside_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// Overload is not an outage: a database that is slow but answers must
// cost the callers time, never errors the textbook cache-aside read (GET,
// load, SET, with no timeout of its own) would not return, and must not
// be asked for the same key twice. One test per protective mechanism: the
// load timeout, the lock wait, the wait for a load slot.

// getKeysOnAll has perCache goroutines on every Cache Get every key at
// once, and reports every Get that did not return the key's value with a
// nil error.
func getKeysOnAll(t *testing.T, caches []*cacheaside.Cache[int, string], keys []int, perCache int) {
	t.Helper()
	ctx := testContext(t)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range caches {
		for _, k := range keys {
			for range perCache {
				wg.Go(func() {
					<-start
					if got, err := c.Get(ctx, k); err != nil || got != faultValue(k) {
						t.Errorf("Get(%d) = %q, %v; want %q, nil", k, got, err, faultValue(k))
					}
				})
			}
		}
	}
	close(start)
	wg.Wait()
}

// TestSlowDatabaseYieldsValuesWithDefaults: with default options, a
// database that takes longer than the load timeout once was (2.4s, 80% of
// the lock TTL) yields the value to every Get on four instances, from one
// load per key.
func TestSlowDatabaseYieldsValuesWithDefaults(t *testing.T) {
	srv := redistest.Start(t)
	ld := &faultLoader{delay: 2600 * time.Millisecond}
	caches := make([]*cacheaside.Cache[int, string], 4)
	for i := range caches {
		caches[i] = newCache(t, srv, ld.load)
	}
	keys := []int{1, 2}
	getKeysOnAll(t, caches, keys, 10)
	if got := ld.calls.Load(); got != int64(len(keys)) {
		t.Errorf("loader called %d times for %d keys on %d instances, want one load per key", got, len(keys), len(caches))
	}
	for _, c := range caches {
		if s := c.Stats(); s.LoadErrors != 0 || s.LockWaitTimeouts != 0 {
			t.Errorf("Stats() = %+v, want LoadErrors 0, LockWaitTimeouts 0", s)
		}
	}
}

// heldLockTTL is the lock TTL of the tests of the heartbeat. It extends the
// lock every third of it, so the lock is lost only when the heartbeat or
// Redis stalls for most of a TTL: 200ms did happen under -race on a
// machine with a load average of 14 (two loads of one key); half a second
// leaves a margin for that.
const heldLockTTL = 500 * time.Millisecond

// heldLockStall is the Redis round trip, seen from this process on a
// connection of its own, that excuses a lapsed heartbeat lock: a third of
// heldLockTTL. A lock lapses only when no extension lands for a whole lock
// TTL, that is when a beat (every third of it) is two thirds of a TTL late:
// the process or Redis stalled that long, and a stall of even half that on
// the probe's connection says the machine, not the heartbeat, was late.
const heldLockStall = heldLockTTL / 3

// TestHolderKeepsLockAliveWhileLoading: a load four lock TTLs long keeps
// its fill lock (the holder extends it while the load runs), so the Gets
// on the other instances wait for its value instead of loading by
// themselves when the lock TTL has passed, and nobody gets an error.
//
// A second load is excused only when a Redis round trip on a probe of its
// own took over heldLockStall between the first load's start and the
// second's (at a load average of 18 with three busy loops, 7 of 30 runs
// loaded twice; see docs/testing.md): a holder that cannot beat for a
// lock TTL must lose its lock, or a frozen holder would keep it forever.
func TestHolderKeepsLockAliveWhileLoading(t *testing.T) {
	srv := redistest.Start(t)
	const lockTTL = heldLockTTL
	ld := &faultLoader{delay: 4 * lockTTL}
	var mu sync.Mutex
	var starts []time.Time // when each load started
	load := func(ctx context.Context, k int) (string, error) {
		mu.Lock()
		starts = append(starts, time.Now())
		mu.Unlock()
		return ld.load(ctx, k)
	}
	caches := make([]*cacheaside.Cache[int, string], 4)
	for i := range caches {
		caches[i] = newCache(t, srv, load, cacheaside.WithLockTTL(lockTTL))
	}
	trips := redistest.ProbeStalls(t, srv.Client(t), heldLockStall)
	getKeysOnAll(t, caches, []int{7}, 10)
	stalls := trips()
	if got := ld.calls.Load(); got == 2 && stalls.During(starts[0], starts[1]) {
		t.Logf("loader called twice: a Redis round trip took over %v between the two loads' starts (slowest %v): this process or Redis stalled for most of a lock TTL", heldLockStall, stalls.Slowest)
	} else if got != 1 {
		t.Errorf("loader called %d times for one key on %d instances, want 1 (Redis round trips over %v: %d, slowest %v)", got, len(caches), heldLockStall, len(stalls.Slow), stalls.Slowest)
	}
	var waits uint64
	for _, c := range caches {
		s := c.Stats()
		waits += s.LockWaits
		if s.LockWaitTimeouts != 0 || s.LoadErrors != 0 {
			t.Errorf("Stats() = %+v, want LockWaitTimeouts 0, LoadErrors 0", s)
		}
	}
	if waits != uint64(len(caches)-1) {
		t.Errorf("%d flights waited on the lock, want %d (one per other instance)", waits, len(caches)-1)
	}
	if ex := srv.CLI(t, "EXISTS", valueKey("7")+":lock"); ex != "0" {
		t.Errorf("EXISTS %s:lock after every Get returned = %s, want 0", valueKey("7"), ex)
	}
}

// TestBatchLoadKeepsLocksAlive: a batch load four lock TTLs long keeps the
// fill locks of all its keys, so a Get of one of them on another instance
// waits for the batch's value instead of loading the key alone.
func TestBatchLoadKeepsLocksAlive(t *testing.T) {
	srv := redistest.Start(t)
	const lockTTL = heldLockTTL
	var batches atomic.Int64
	entered := make(chan struct{}, 1)
	batch := func(ctx context.Context, keys []int) (map[int]string, error) {
		if batches.Add(1) == 1 {
			entered <- struct{}{}
		}
		select {
		case <-time.After(4 * lockTTL):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		m := make(map[int]string, len(keys))
		for _, k := range keys {
			m[k] = faultValue(k)
		}
		return m, nil
	}
	single := &faultLoader{}
	a := newCache(t, srv, single.load, cacheaside.WithLockTTL(lockTTL), cacheaside.WithBatchLoader(batch))
	b := newCache(t, srv, single.load, cacheaside.WithLockTTL(lockTTL))
	ctx := testContext(t)
	many := make(chan error, 1)
	go func() {
		m, err := a.GetMany(ctx, []int{1, 2, 3})
		if err == nil && len(m) != 3 {
			t.Errorf("GetMany(1, 2, 3) = %v, want 3 values", m)
		}
		many <- err
	}()
	await(t, entered, "the batch load to start")
	if got, err := b.Get(ctx, 2); err != nil || got != faultValue(2) {
		t.Errorf("Get(2) on another instance = %q, %v; want %q, nil", got, err, faultValue(2))
	}
	if err := await(t, many, "GetMany"); err != nil {
		t.Errorf("GetMany(1, 2, 3) = %v, want nil", err)
	}
	if n, m := batches.Load(), single.calls.Load(); n != 1 || m != 0 {
		t.Errorf("%d batch loads and %d single loads, want 1 and 0 (the other instance waits for the batch)", n, m)
	}
}

// holdCounter is a go-redis hook that counts the round trips that extend
// fill locks, and the extensions they carry: calls of a script with three
// keys and two arguments, which only the lock heartbeat sends.
type holdCounter struct{ trips, holds atomic.Int64 }

func isHold(cmd redis.Cmder) bool {
	a := cmd.Args()
	name := strings.ToLower(fmt.Sprint(a[0]))
	return (name == "evalsha" || name == "eval") && len(a) == 8 && fmt.Sprint(a[2]) == "3"
}

func (h *holdCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *holdCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if isHold(cmd) {
			h.trips.Add(1)
			h.holds.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *holdCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var n int64
		for _, cmd := range cmds {
			if isHold(cmd) {
				n++
			}
		}
		if n > 0 {
			h.trips.Add(1)
			h.holds.Add(n)
		}
		return next(ctx, cmds)
	}
}

var _ redis.Hook = (*holdCounter)(nil)

// TestHeartbeatExtendsEveryLockInOneRoundTrip: the locks of all the loads
// of a Cache, those running and those waiting for a load slot, are
// extended together, one round trip per beat (a third of the lock TTL),
// however many there are, and none lapses.
func TestHeartbeatExtendsEveryLockInOneRoundTrip(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	var hc holdCounter
	rdb.AddHook(&hc)
	const lockTTL = 300 * time.Millisecond
	ld := &faultLoader{delay: 2 * lockTTL}
	c := newCacheOn(t, rdb, ld.load, cacheaside.WithLockTTL(lockTTL), cacheaside.WithMaxConcurrentLoads(8))
	keys := make([]int, 40)
	for i := range keys {
		keys[i] = i
	}
	start := time.Now()
	getKeysOnAll(t, []*cacheaside.Cache[int, string]{c}, keys, 1)
	elapsed := time.Since(start)
	if got := ld.calls.Load(); got != int64(len(keys)) {
		t.Errorf("loader called %d times for %d keys, want one load per key", got, len(keys))
	}
	beats := int64(elapsed/(lockTTL/3)) + 1 // the most a ticker of that period fires
	if trips, holds := hc.trips.Load(), hc.holds.Load(); trips > beats || holds < int64(len(keys)) {
		t.Errorf("%d round trips carried %d lock extensions in %v; want at most %d round trips (one per beat) and at least %d extensions (every lock)",
			trips, holds, elapsed.Round(time.Millisecond), beats, len(keys))
	}
}

// TestLoadSlotWaitIsNotAnError: Gets of more keys than there are load
// slots queue for the slots; the queue does not eat into the load timeout,
// so each load gets the whole timeout and every Get its value.
func TestLoadSlotWaitIsNotAnError(t *testing.T) {
	srv := redistest.Start(t)
	const slots = 2
	ld := &faultLoader{delay: 150 * time.Millisecond}
	c := newCache(t, srv, ld.load, cacheaside.WithMaxConcurrentLoads(slots),
		cacheaside.WithLoadTimeout(400*time.Millisecond)) // 2.7 loads long; the queue is 6 loads long
	keys := make([]int, 12)
	for i := range keys {
		keys[i] = i
	}
	getKeysOnAll(t, []*cacheaside.Cache[int, string]{c}, keys, 1)
	if got := ld.maxRunning.Load(); got > slots {
		t.Errorf("%d loads ran at once, want at most %d (WithMaxConcurrentLoads(%d))", got, slots, slots)
	}
	if got := ld.calls.Load(); got != int64(len(keys)) {
		t.Errorf("loader called %d times for %d keys, want one load per key", got, len(keys))
	}
}

// TestConcurrentLoadsBoundedByDefault: with default options one Cache runs
// at most 16 loads at once, and the Gets beyond that wait for a slot
// without an error.
func TestConcurrentLoadsBoundedByDefault(t *testing.T) {
	srv := redistest.Start(t)
	ld := &faultLoader{delay: 100 * time.Millisecond}
	c := newCache(t, srv, ld.load)
	keys := make([]int, 40)
	for i := range keys {
		keys[i] = i
	}
	getKeysOnAll(t, []*cacheaside.Cache[int, string]{c}, keys, 1)
	if got := ld.maxRunning.Load(); got > 16 {
		t.Errorf("%d loads ran at once with default options, want at most 16", got)
	}
	if got := ld.calls.Load(); got != int64(len(keys)) {
		t.Errorf("loader called %d times for %d keys, want one load per key", got, len(keys))
	}
}

// TestLoaderMayGetFromItsOwnCache: a loader that Gets another key of its
// own Cache does not wait for a second load slot (its load already holds
// one), so a bound of one slot does not deadlock it.
func TestLoaderMayGetFromItsOwnCache(t *testing.T) {
	srv := redistest.Start(t)
	var c *cacheaside.Cache[string, string]
	c = newCache(t, srv, func(ctx context.Context, key string) (string, error) {
		if key != "child" {
			return "leaf", nil
		}
		parent, err := c.Get(ctx, "parent")
		return "child of " + parent, err
	}, cacheaside.WithMaxConcurrentLoads(1))
	done := make(chan outcome[string], 1)
	go func() {
		v, err := c.Get(testContext(t), "child")
		done <- outcome[string]{v, err}
	}()
	if got := await(t, done, "Get(child)"); got.err != nil || got.val != "child of leaf" {
		t.Errorf("Get(%q) = %q, %v; want %q, nil", "child", got.val, got.err, "child of leaf")
	}
}
