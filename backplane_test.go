package cacheaside_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestInvalidateReachesOtherLocalCaches has two processes that read a key
// from their L1 first. An Invalidate on A must drop B's copy: once B has
// applied the message, B's next Get loads the new value instead of serving
// its local copy for the rest of the L1 TTL.
func TestInvalidateReachesOtherLocalCaches(t *testing.T) {
	srv := redistest.Start(t)
	var version atomic.Int64
	version.Store(1)
	load := func(ctx context.Context, k string) (int64, error) { return version.Load(), nil }
	opts := []cacheaside.Option{cacheaside.WithLocalCache(100, time.Minute), cacheaside.WithLocalFirst(true)}
	a := newCache(t, srv, load, opts...)
	b := newCache(t, srv, load, opts...)
	ctx := context.Background()
	applied := waitListening(t, srv, a, b, "probe")

	for _, c := range []*cacheaside.Cache[string, int64]{a, b} {
		if v, err := c.Get(ctx, "k"); err != nil || v != 1 {
			t.Fatalf("Get(k) = %v, %v; want 1", v, err)
		}
	}
	if v, _ := b.Get(ctx, "k"); v != 1 || b.Stats().LocalHits == 0 {
		t.Fatalf("B's second Get(k) = %v with %d local hits; want 1 from its L1", v, b.Stats().LocalHits)
	}

	version.Store(2)
	if err := a.Invalidate(ctx, "k"); err != nil {
		t.Fatalf("Invalidate(k) = %v", err)
	}
	sent := time.Now()
	deadline := sent.Add(waitLimit)
	for b.Stats().LocalInvalidations == applied {
		if time.Now().After(deadline) {
			t.Fatalf("B applied no invalidation within %v of A's Invalidate", waitLimit)
		}
		time.Sleep(100 * time.Microsecond)
	}
	t.Logf("B applied A's invalidation %v after Invalidate returned", time.Since(sent).Round(10*time.Microsecond))
	if v, err := b.Get(ctx, "k"); err != nil || v != 2 {
		t.Errorf("B's Get(k) after A's Invalidate reached it = %v, %v; want 2", v, err)
	}

	// A Set on A reaches B's L1 the same way; B then reads the value A set.
	applied = b.Stats().LocalInvalidations
	if err := a.Set(ctx, "k", 3); err != nil {
		t.Fatalf("Set(k, 3) = %v", err)
	}
	deadline = time.Now().Add(waitLimit)
	for b.Stats().LocalInvalidations == applied {
		if time.Now().After(deadline) {
			t.Fatalf("B applied no invalidation within %v of A's Set", waitLimit)
		}
		time.Sleep(time.Millisecond)
	}
	if v, err := b.Get(ctx, "k"); err != nil || v != 3 {
		t.Errorf("B's Get(k) after A's Set reached it = %v, %v; want 3", v, err)
	}
	if n := a.Stats().LocalInvalidations; n != 0 {
		t.Errorf("A applied %d invalidations, want 0: its own messages are ignored", n)
	}
}

// TestBackplaneDropMarksLocalCacheUnverified checks that when the
// subscription drops (Redis restarts), a process stops serving its L1
// copies on healthy reads, since it may have missed invalidations.
func TestBackplaneDropMarksLocalCacheUnverified(t *testing.T) {
	srv := redistest.Start(t)
	var loads atomic.Int64
	load := func(ctx context.Context, k string) (int64, error) { return loads.Add(1), nil }
	c := newCache(t, srv, load, cacheaside.WithLocalCache(100, time.Minute), cacheaside.WithLocalFirst(true))
	ctx := context.Background()
	waitSubscribed(t, srv, 1)
	if _, err := c.Get(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	srv.Restart() // drops the subscription; Redis comes back empty
	waitSubscribed(t, srv, 1)
	if v, err := c.Get(ctx, "k"); err != nil || v != 2 {
		t.Errorf("Get(k) after the subscription dropped = %v, %v; want 2 (a reload, not the unverified L1 copy)", v, err)
	}
}

// waitSubscribed waits until n clients subscribe to the invalidation
// channel of the default prefix.
func waitSubscribed(t *testing.T, srv *redistest.Server, n int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		out := srv.CLI(t, "PUBSUB", "NUMSUB", "ca:invalidations")
		if out == "[ca:invalidations "+itoa(n)+"]" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("PUBSUB NUMSUB = %s, want %d subscribers within %v", out, n, waitLimit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func itoa(n int) string { return string(rune('0' + n)) }
