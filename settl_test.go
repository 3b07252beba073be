package cacheaside_test

import (
	"context"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestLoaderSetsTTL checks SetTTL from inside a loader: a result can get
// its own TTL (jitter still applies) or not be cached at all, without
// changing the LoadFunc signature.
func TestLoaderSetsTTL(t *testing.T) {
	srv := redistest.Start(t)
	var calls int
	load := func(ctx context.Context, k string) (string, error) {
		calls++
		switch k {
		case "short":
			cacheaside.SetTTL(ctx, 2*time.Second)
		case "never":
			cacheaside.SetTTL(ctx, 0)
		}
		return "v-" + k, nil
	}
	c := newCache(t, srv, load, cacheaside.WithTTL(time.Hour), cacheaside.WithJitter(0.1))
	ctx := context.Background()
	start := time.Now()
	for _, k := range []string{"short", "never", "default"} {
		if v, err := c.Get(ctx, k); err != nil || v != "v-"+k {
			t.Fatalf("Get(%q) = %q, %v", k, v, err)
		}
	}
	// The TTL runs down from the fill to the PTTL read: allow for the time
	// that took, which on a busy machine can be milliseconds.
	ms := pttl(t, srv, "ca:{short}")
	if elapsed := time.Since(start).Milliseconds() + 1; ms < 1800-elapsed || ms > 2200 {
		t.Errorf("PTTL ca:{short} = %d ms %d ms after the Gets began, want 2 s ± 10%% (set by the loader) less the time elapsed", ms, elapsed)
	}
	if ms := pttl(t, srv, "ca:{default}"); ms < 3_200_000 {
		t.Errorf("PTTL ca:{default} = %d ms, want about an hour (WithTTL)", ms)
	}
	if ex := srv.CLI(t, "EXISTS", "ca:{never}"); ex != "0" {
		t.Errorf("EXISTS ca:{never} = %s, want 0: the loader asked not to cache it", ex)
	}
	if ex := srv.CLI(t, "EXISTS", "ca:{never}:lock"); ex != "0" {
		t.Errorf("EXISTS ca:{never}:lock = %s, want 0: an uncached load releases its lock", ex)
	}
	before := calls
	if _, err := c.Get(ctx, "never"); err != nil || calls != before+1 {
		t.Errorf("second Get(never) made %d loader calls, want 1 (nothing was cached)", calls-before)
	}
	cacheaside.SetTTL(ctx, time.Second) // outside a loader: does nothing, does not panic
}
