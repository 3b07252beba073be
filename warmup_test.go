package cacheaside_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// The tests in this file cover warm-up: after an empty restart (detected
// with the marker key), and by an explicit Warm.

func TestWarmupAfterEmptyRestart(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ld := &faultLoader{}
	keys := faultKeys(1, 20)
	c := newFaultCache(t, rdb, ld.load,
		// Not a fault test until the restart: a warm-up call past the
		// fault tests' 100ms (a busy machine) would leave its key cold.
		cacheaside.WithRedisTimeout(time.Second),
		cacheaside.WithPrefix("w:"),
		cacheaside.WithWarmupKeys(keys...),
		cacheaside.WithRestartCheck(100*time.Millisecond))
	waitFor(t, 15*time.Second, "the first warm-up stores the 20 keys", func() bool {
		return existing(t, srv, "w:", keys) == len(keys)
	})
	waitFor(t, 15*time.Second, "the first warm-up finishes", func() bool { return c.Stats().Warmed == uint64(len(keys)) })

	before := c.Stats()
	srv.Restart() // empty
	waitFor(t, 15*time.Second, "the warm-up after the restart stores the 20 keys again, without a Get", func() bool {
		return existing(t, srv, "w:", keys) == len(keys)
	})
	waitFor(t, 15*time.Second, "the warm-up after the restart finishes", func() bool {
		return c.Stats().Warmed == before.Warmed+uint64(len(keys))
	})
	warmed := c.Stats()
	if warmed.RestartsDetected <= before.RestartsDetected {
		t.Errorf("Stats().RestartsDetected = %d after an empty restart, want more than %d", warmed.RestartsDetected, before.RestartsDetected)
	}
	if loads := warmed.Loads - before.Loads; loads != uint64(len(keys)) {
		t.Errorf("the warm-up after the restart made %d loads, want %d", loads, len(keys))
	}
	mustGetAll(t, c, keys)
	after := c.Stats()
	if hits, loads := after.Hits-warmed.Hits, after.Loads-warmed.Loads; hits != uint64(len(keys)) || loads != 0 {
		t.Errorf("Gets of the warmed keys made %d hits and %d loads, want %d hits and no load", hits, loads, len(keys))
	}
}

func TestWarmupAfterRestartOncePerFleet(t *testing.T) {
	srv := redistest.Start(t)
	ld := &faultLoader{delay: 5 * time.Millisecond}
	keys := faultKeys(1, 20)
	fleet := make([]*cacheaside.Cache[int, string], 3)
	for i := range fleet {
		fleet[i] = newFaultCache(t, srv.Client(t), ld.load,
			cacheaside.WithRedisTimeout(time.Second), // see TestWarmupAfterEmptyRestart
			cacheaside.WithPrefix("fleet:"),
			cacheaside.WithWarmupKeys(keys...),
			cacheaside.WithRestartCheck(100*time.Millisecond))
	}
	restarts := func() (n uint64) {
		for _, c := range fleet {
			n += c.Stats().RestartsDetected
		}
		return n
	}
	waitFor(t, 15*time.Second, "the first warm-up stores the 20 keys", func() bool {
		return existing(t, srv, "fleet:", keys) == len(keys)
	})
	time.Sleep(300 * time.Millisecond) // let every watcher check the marker
	if n := ld.calls.Load(); n > int64(len(keys))+2 {
		t.Errorf("3 caches warming a new server made %d loads, want about %d", n, len(keys))
	}

	calls, detected := ld.calls.Load(), restarts()
	srv.Restart() // empty
	waitFor(t, 5*time.Second, "the fleet warms the 20 keys after the restart", func() bool {
		return existing(t, srv, "fleet:", keys) == len(keys)
	})
	time.Sleep(500 * time.Millisecond) // several more checks by every watcher
	if n := ld.calls.Load() - calls; n < int64(len(keys)) || n > int64(len(keys))+2 {
		t.Errorf("3 caches warming after one empty restart made %d loads, want about %d (once across the fleet, not once per cache)", n, len(keys))
	}
	if n := restarts() - detected; n != 1 {
		t.Errorf("the fleet detected %d restarts, want 1", n)
	}
}

// TestScriptsReloadAfterEmptyRestart checks that a restart, which empties
// the server's script cache, costs no error: Script.Run falls back from
// EVALSHA to EVAL, and Invalidate's pipeline uses EVAL.
func TestScriptsReloadAfterEmptyRestart(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ld := &faultLoader{}
	c := newFaultCache(t, rdb, ld.load, cacheaside.WithPrefix("ns:"))
	mustGet(t, c, 1)

	srv.Restart()
	if n := srv.CLI(t, "INFO", "memory"); !strings.Contains(n, "number_of_cached_scripts:0") {
		t.Fatalf("the restarted server still has cached scripts:\n%s", n)
	}
	cold := faultKeys(2, 5)
	mustGetAll(t, c, cold) // GET, then EVALSHA → NOSCRIPT → EVAL
	if n := existing(t, srv, "ns:", cold); n != len(cold) {
		t.Errorf("%d of %d cold Gets after the restart filled Redis, want all", n, len(cold))
	}
	if redisCommands(t, srv, "eval") == 0 {
		t.Errorf("no EVAL ran after the restart: the script fallback was not exercised")
	}
	if s := c.Stats(); s.RedisErrors != 0 {
		t.Errorf("Stats().RedisErrors = %d after the restart, want 0", s.RedisErrors)
	}

	ctx := context.Background()
	if err := c.Invalidate(ctx, 2); err != nil {
		t.Errorf("Invalidate(2) = %v, want nil", err)
	}
	if err := c.Invalidate(ctx, 3, 4, 5); err != nil {
		t.Errorf("Invalidate(3, 4, 5) = %v, want nil", err)
	}
	if n := existing(t, srv, "ns:", cold); n != 0 {
		t.Errorf("%d keys left after Invalidate, want 0", n)
	}
}

func TestWarmLoadsListedKeys(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	errDB := errors.New("database unavailable")
	var perKey [20]atomic.Int64
	ld := &faultLoader{fail: func(k int) error {
		perKey[k].Add(1)
		switch k {
		case 7:
			return cacheaside.ErrNotFound
		case 8, 9:
			return errDB
		}
		return nil
	}}
	c := newFaultCache(t, rdb, ld.load,
		// This test is about what Warm loads and skips, not about faults:
		// a Redis call past the fault tests' 100ms (a busy machine, seen
		// in CI: 7 of 8 keys warmed) would rightly fail its key.
		cacheaside.WithRedisTimeout(time.Second),
		cacheaside.WithPrefix("wl:"),
		cacheaside.WithRestartCheck(0), // explicit Warm only
		cacheaside.WithWarmupKeys(11, 12),
		cacheaside.WithWarmup(func(context.Context) ([]int, error) { return faultKeys(1, 10), nil }))
	mustGet(t, c, 12)                                                // already in Redis: skipped
	srv.CLI(t, "SET", "wl:{5}:lock", "other-process", "PX", "10000") // someone else fills 5: skipped

	err := c.Warm(context.Background())
	if !errors.Is(err, errDB) || !strings.Contains(err.Error(), "key 8") || !strings.Contains(err.Error(), "key 9") {
		t.Errorf("Warm() = %v, want the loader's error for keys 8 and 9", err)
	}
	if err != nil && strings.Contains(err.Error(), "key 7") {
		t.Errorf("Warm() = %v, want no error for key 7, which the loader does not find", err)
	}
	for k, want := range map[int]int64{5: 0, 12: 1, 1: 1, 10: 1, 11: 1} {
		if n := perKey[k].Load(); n != want {
			t.Errorf("loader called %d times for key %d, want %d", n, k, want)
		}
	}
	s := c.Stats()
	// Warmed: 1-4, 6, 10, 11 and the "not found" answer for 7.
	if s.Warmed != 8 || s.WarmUps != 1 {
		t.Errorf("Stats().Warmed, WarmUps = %d, %d, want 8, 1", s.Warmed, s.WarmUps)
	}
	if n := existing(t, srv, "wl:", []int{1, 2, 3, 4, 6, 7, 10, 11, 12}); n != 9 {
		t.Errorf("%d of 9 warmed or present keys are in Redis, want 9", n)
	}
	if n := existing(t, srv, "wl:", []int{5, 8, 9}); n != 0 {
		t.Errorf("%d of the skipped or failed keys are in Redis, want 0", n)
	}
}

func TestWarmStopsWhenCancelled(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ld := &faultLoader{delay: 20 * time.Millisecond}
	ld.fail = func(int) error {
		if ld.calls.Load() == 3 {
			cancel()
		}
		return nil
	}
	keys := faultKeys(1, 50)
	c := newFaultCache(t, rdb, ld.load,
		cacheaside.WithPrefix("wc:"),
		cacheaside.WithRestartCheck(0),
		cacheaside.WithWarmupConcurrency(1),
		cacheaside.WithWarmupKeys(keys...))

	start := time.Now()
	err := c.Warm(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Warm() cancelled after 3 loads = %v, want an error matching context.Canceled", err)
	}
	if n := ld.calls.Load(); n > 5 {
		t.Errorf("Warm() cancelled after 3 loads went on to %d loads of %d keys", n, len(keys))
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("Warm() cancelled after 3 loads took %v, want it to stop early", took)
	}

	calls := ld.calls.Load()
	if err := c.Warm(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Warm() with a cancelled context = %v, want an error matching context.Canceled", err)
	}
	if n := ld.calls.Load() - calls; n != 0 {
		t.Errorf("Warm() with a cancelled context made %d loads, want 0", n)
	}
}

func TestWarmReportsListError(t *testing.T) {
	srv := redistest.Start(t)
	errList := errors.New("top sellers unavailable")
	ld := &faultLoader{}
	c := newFaultCache(t, srv.Client(t), ld.load,
		cacheaside.WithRestartCheck(0),
		cacheaside.WithWarmup(func(context.Context) ([]int, error) { return nil, errList }))
	if err := c.Warm(context.Background()); !errors.Is(err, errList) {
		t.Errorf("Warm() = %v, want the listing error", err)
	}
	if n := ld.calls.Load(); n != 0 {
		t.Errorf("Warm() with a failed listing made %d loads, want 0", n)
	}
}

// TestWarmedCountsOnlyStoredKeys: Stats().Warmed counts keys "loaded and
// written by warm-ups". A "not found" answer with negative caching off is
// not written, so it must not count.
func TestWarmedCountsOnlyStoredKeys(t *testing.T) {
	srv := redistest.Start(t)
	ld := &faultLoader{fail: func(k int) error {
		if k == 2 {
			return cacheaside.ErrNotFound
		}
		return nil
	}}
	c := newFaultCache(t, srv.Client(t), ld.load,
		cacheaside.WithPrefix("wn:"),
		cacheaside.WithNegativeTTL(0),
		cacheaside.WithRestartCheck(0),
		cacheaside.WithWarmupKeys(1, 2))
	if err := c.Warm(context.Background()); err != nil {
		t.Fatalf("Warm() = %v, want nil", err)
	}
	stored := existing(t, srv, "wn:", []int{1, 2})
	if s := c.Stats(); s.Warmed != uint64(stored) {
		t.Errorf("Stats().Warmed = %d, but the warm-up stored %d keys in Redis (key 2 is not found and WithNegativeTTL(0))", s.Warmed, stored)
	}
}

// TestRestartWatcherAcrossFreeze runs the restart watcher on a default
// client (which ignores context deadlines on reads, so the guard abandons
// calls at its budget) while the server is frozen and thawed. The marker
// calls that complete after the watcher gave up on them must not touch the
// watcher's state (the race detector checks that), and the thawed server,
// which kept its data, must not count as restarted.
func TestRestartWatcherAcrossFreeze(t *testing.T) {
	srv := redistest.Start(t)
	rdb := newFaultClient(t, srv.Addr())
	ld := &faultLoader{}
	keys := faultKeys(1, 5)
	c := newFaultCache(t, rdb, ld.load,
		cacheaside.WithPrefix("wf:"),
		cacheaside.WithWarmupKeys(keys...),
		// Short enough to abandon calls quickly on the frozen server, long
		// enough that the first warm-up completes on a busy machine (30ms
		// did not within 5s at a load average of 24).
		cacheaside.WithRedisTimeout(200*time.Millisecond),
		cacheaside.WithBreaker(1000, time.Second), // keep sending marker calls
		cacheaside.WithRestartCheck(20*time.Millisecond),
		cacheaside.WithTimeoutClone(false)) // calls are abandoned at the timeout
	waitFor(t, 15*time.Second, "the first warm-up finishes", func() bool { return c.Stats().Warmed == uint64(len(keys)) })
	before := c.Stats()

	thaw := freezeServer(t, srv)
	waitFor(t, 5*time.Second, "the watcher abandons marker calls on the frozen server", func() bool {
		return c.Stats().Abandoned >= 2
	})
	thaw()
	recoverServer(t, srv, rdb)
	// The abandoned calls complete now; Close waits for any that has not.
	time.Sleep(200 * time.Millisecond) // a few more checks on the thawed server
	if got := c.Stats().RestartsDetected; got != before.RestartsDetected {
		t.Errorf("Stats().RestartsDetected = %d after a freeze that kept the data, want %d", got, before.RestartsDetected)
	}
}

// TestWarmLogsProgress: a warm-up of 1,000 keys logs its start, a progress
// line each tenth of the keys, and its end.
func TestWarmLogsProgress(t *testing.T) {
	srv := redistest.Start(t)
	var logs syncBuffer
	ld := &faultLoader{}
	c := newFaultCache(t, srv.Client(t), ld.load,
		cacheaside.WithRedisTimeout(redisTimeout), // 100ms failed a call of the 1,000 at a load average of 24
		cacheaside.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))),
		cacheaside.WithRestartCheck(0),
		cacheaside.WithWarmupKeys(faultKeys(1, 1000)...))
	if err := c.Warm(testContext(t)); err != nil {
		t.Fatalf("Warm() = %v", err)
	}
	out := logs.String()
	for _, want := range []string{"warm-up started", "warm-up finished"} {
		if strings.Count(out, want) != 1 {
			t.Errorf("log has %d %q lines, want 1:\n%s", strings.Count(out, want), want, out)
		}
	}
	if n := strings.Count(out, "warm-up progress"); n != 9 {
		t.Errorf("log has %d progress lines for 1,000 keys, want 9 (one per 100 keys before the end):\n%s", n, out)
	}
}
