package cacheaside_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestEarlyRefreshHotKey has 4 instances read one hot key for 3.5 TTLs.
// With early refresh the fleet reloads it about once per TTL, in the
// background, and no Get after the first misses. Without it every expiry
// is a miss on some instance.
//
// β is 3, so that the refresh starts about 400 ms before the expiry, not
// 95 ms as with β = 1: a refresh that starts in time has hundreds of
// milliseconds to land, where at a load average of 20 one that had 65 ms
// (95 ms less the 30 ms load) missed once or twice per run (misses after
// the first Get = 1 or 2). A refresh that never starts, or starts at the
// expiry, still misses at each of the 3 expiries. A probe client measures
// Redis round trips the whole time: a miss that follows a stall of this
// process or Redis (refreshStall within refreshLead) is logged, not
// failed.
func TestEarlyRefreshHotKey(t *testing.T) {
	for _, tt := range []struct {
		name  string
		opts  []cacheaside.Option
		early bool
	}{
		{"early refresh", []cacheaside.Option{cacheaside.WithEarlyRefresh(3)}, true},
		{"no early refresh", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.Start(t)
			const ttl = 2 * time.Second
			var loads atomic.Int64
			load := func(ctx context.Context, k string) (string, error) {
				loads.Add(1)
				time.Sleep(30 * time.Millisecond)
				return "v", nil
			}
			opts := append([]cacheaside.Option{cacheaside.WithTTL(ttl), cacheaside.WithJitter(0)}, tt.opts...)
			caches := make([]*cacheaside.Cache[string, string], 4)
			for i := range caches {
				caches[i] = newCache(t, srv, load, opts...)
			}
			ctx := context.Background()
			if _, err := caches[0].Get(ctx, "hot"); err != nil {
				t.Fatal(err)
			}
			stop := time.Now().Add(3*ttl + ttl/2)
			var wg sync.WaitGroup
			// About 800 Gets/s in all. XFetch fires, at a request rate r,
			// when the gap g to expiry makes r·Δβ·exp(−g/Δβ) ≈ 1, that is
			// g ≈ Δβ·ln(rΔβ) ≈ 90ms × ln(72) ≈ 385 ms (at a quarter of the
			// rate, on a loaded machine, 90ms × ln(18) ≈ 260 ms): about one
			// refresh per TTL of 2 s, each done (30 ms) long before the
			// expiry.
			trips := redistest.ProbeStalls(t, srv.Client(t), refreshStall)
			var mu sync.Mutex
			var missed []time.Time // when each Get that missed returned
			for _, c := range caches {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Now().Before(stop) {
						before := c.Stats().Misses
						if v, err := c.Get(ctx, "hot"); err != nil || v != "v" {
							t.Errorf("Get(hot) = %q, %v", v, err)
							return
						}
						if c.Stats().Misses != before {
							mu.Lock()
							missed = append(missed, time.Now())
							mu.Unlock()
						}
						time.Sleep(5 * time.Millisecond)
					}
				}()
			}
			wg.Wait()
			stalls := trips()
			var misses, refreshes uint64
			for _, c := range caches {
				s := c.Stats()
				misses += s.Misses
				refreshes += s.EarlyRefreshes
			}
			misses-- // the first Get
			n := loads.Load()
			t.Logf("loads = %d, misses after the first Get = %d, early refreshes = %d", n, misses, refreshes)
			if tt.early {
				// A miss after a stall: the refresh may have started in
				// time and not landed (seen at a load average of 20 with
				// compiles running: misses after the first Get = 1,
				// early refreshes = 2).
				var excused int
				for _, m := range missed {
					if stalls.During(m.Add(-refreshLead), m) {
						excused++
					}
				}
				if excused > 0 {
					t.Logf("%d misses came after a Redis round trip over %v in the %v before them (slowest %v): this process or Redis stalled", excused, refreshStall, refreshLead, stalls.Slowest)
				}
				if int(misses)-excused > 0 {
					t.Errorf("misses after the first Get = %d (%d after a stall), want 0 with early refresh", misses, excused)
				}
				if n < 3 || n > 7 {
					t.Errorf("loads over 3.5 TTLs = %d, want about one per TTL (3 to 7)", n)
				}
			} else if misses == 0 {
				t.Errorf("misses without early refresh = 0, want some at each expiry (the test cannot tell otherwise)")
			}
		})
	}
}

// refreshLead is about how long before the expiry TestEarlyRefreshHotKey's
// refresh starts (385ms at its request rate, less when the rate drops),
// and refreshStall a Redis round trip (from this process) that took a
// quarter of that: a stall that may keep a refresh that started in time
// from landing before the expiry. Without early refresh, or with one
// that starts at the expiry, every expiry misses, stall or not.
const (
	refreshLead  = 500 * time.Millisecond
	refreshStall = 100 * time.Millisecond
)

// TestEarlyRefreshSkippedIsCounted: early refreshes run at most 4 at a
// time; a refresh due while all 4 are busy is skipped (a later hit tries
// again) and counted in Stats().RefreshesSkipped, never dropped silently.
func TestEarlyRefreshSkippedIsCounted(t *testing.T) {
	srv := redistest.Start(t)
	var hold atomic.Bool
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	load := func(ctx context.Context, k string) (string, error) {
		time.Sleep(20 * time.Millisecond) // a load time for XFetch
		if hold.Load() {
			select {
			case <-release:
			case <-ctx.Done():
			}
		}
		return "v", nil
	}
	// β = 10⁶ with a 20 ms load makes every hit due for a refresh (the
	// chance that one is not is about e^(−60s/(20ms·10⁶)) below 0.3%).
	// A refresh whose lock acquire is cut at the Redis timeout gives its
	// slot back at once, and the next due hit takes it instead of being
	// skipped: a timeout that a loaded machine does not reach keeps the 4
	// slots busy. (3 skipped of 20, seen in CI at loads of 14 and 17, was
	// a refresh that took a late write for another process's refresh and
	// ended at once: TestEarlyRefreshAfterSlowWrite.)
	c := newCache(t, srv, load, cacheaside.WithTTL(time.Minute), cacheaside.WithEarlyRefresh(1e6),
		cacheaside.WithRedisTimeout(2*time.Second))
	ctx := testContext(t)
	const n = 20
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
	}
	if _, err := c.GetMany(ctx, keys); err != nil {
		t.Fatalf("GetMany = %v, want nil", err)
	}
	hold.Store(true) // refreshes now stay busy until the test ends
	for _, k := range keys {
		if v, err := c.Get(ctx, k); err != nil || v != "v" {
			t.Fatalf("Get(%s) = %q, %v; want %q, nil", k, v, err, "v")
		}
	}
	s := c.Stats()
	if s.EarlyRefreshes > 4 {
		t.Errorf("Stats().EarlyRefreshes = %d with every refresh blocked, want at most 4 running", s.EarlyRefreshes)
	}
	// At most 4 of the 20 due refreshes run; nearly all of the others
	// must be counted as skipped.
	if s.RefreshesSkipped < n/2 {
		t.Errorf("Stats().RefreshesSkipped = %d after %d hits due for a refresh with 4 running, want ≥ %d", s.RefreshesSkipped, n, n/2)
	}
}
