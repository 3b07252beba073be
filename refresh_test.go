package cacheaside_test

import (
	"context"
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
func TestEarlyRefreshHotKey(t *testing.T) {
	for _, tt := range []struct {
		name  string
		opts  []cacheaside.Option
		early bool
	}{
		{"early refresh", []cacheaside.Option{cacheaside.WithEarlyRefresh(1)}, true},
		{"no early refresh", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := redistest.Start(t)
			const ttl = 600 * time.Millisecond
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
			// g ≈ Δβ·ln(rΔβ) ≈ 30ms × ln(24) ≈ 95 ms: about one refresh per
			// TTL of 600 ms, each done (30 ms) before the expiry.
			for _, c := range caches {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for time.Now().Before(stop) {
						if v, err := c.Get(ctx, "hot"); err != nil || v != "v" {
							t.Errorf("Get(hot) = %q, %v", v, err)
							return
						}
						time.Sleep(5 * time.Millisecond)
					}
				}()
			}
			wg.Wait()
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
				if misses != 0 {
					t.Errorf("misses after the first Get = %d, want 0 with early refresh", misses)
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
