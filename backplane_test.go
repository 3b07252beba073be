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
	waitSubscribedTo(t, srv, "ca:invalidations", n)
}

// waitSubscribedTo waits until n clients subscribe to channel.
func waitSubscribedTo(t *testing.T, srv *redistest.Server, channel string, n int) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		out := srv.CLI(t, "PUBSUB", "NUMSUB", channel)
		if out == "["+channel+" "+itoa(n)+"]" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("PUBSUB NUMSUB = %s, want %d subscribers within %v", out, n, waitLimit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func itoa(n int) string { return string(rune('0' + n)) }

// TestInvalidateReachesOtherLocalCachesWithOddKeys: keys and a prefix
// holding newlines and other bytes that a text format would read as
// separators still reach the other processes' L1 whole.
func TestInvalidateReachesOtherLocalCachesWithOddKeys(t *testing.T) {
	srv := redistest.Start(t)
	const prefix = "p\n\x00\xff\r:"
	keys := []string{"a\nb", "\n", "\n\n", "x\x00\xff\r\n", "tail\n", "}\n", ""}
	version, load := versioned()
	opts := append([]cacheaside.Option{cacheaside.WithPrefix(prefix)}, localFirst...)
	a := newCache(t, srv, load, opts...)
	b := newCache(t, srv, load, opts...)
	ctx := context.Background()
	waitSubscribedTo(t, srv, prefix+"invalidations", 2)
	applied := b.Stats().LocalInvalidations
	if err := a.Invalidate(ctx, "probe"); err != nil {
		t.Fatalf("Invalidate(probe) = %v", err)
	}
	applied = waitApplied(t, b, applied)

	for _, k := range keys {
		mustGetValue(t, b, k, 1, "B fills its L1")
	}
	hits := b.Stats().LocalHits
	for _, k := range keys {
		mustGetValue(t, b, k, 1, "B from its L1")
	}
	if n := b.Stats().LocalHits - hits; n != uint64(len(keys)) {
		t.Fatalf("B's second Gets of %d keys made %d local hits, want %d", len(keys), n, len(keys))
	}

	version.Store(2)
	if err := a.Invalidate(ctx, keys...); err != nil {
		t.Fatalf("Invalidate(%q) = %v", keys, err)
	}
	applied = waitApplied(t, b, applied)
	for _, k := range keys {
		mustGetValue(t, b, k, 2, "B, after A's Invalidate reached it")
	}

	// Set publishes the same way.
	if err := a.Set(ctx, keys[0], 3); err != nil {
		t.Fatalf("Set(%q, 3) = %v", keys[0], err)
	}
	waitApplied(t, b, applied)
	mustGetValue(t, b, keys[0], 3, "B, after A's Set reached it")
}

// TestForeignInvalidationMessagesAreSafe publishes on the invalidation
// channel what this version cannot read: the newline format of earlier
// versions, and bytes in no format at all. None may crash the listener or
// drop a key by a wrong name; since each may name a key that changed, the
// process stops trusting its L1 on healthy reads until entries are read
// from Redis again.
func TestForeignInvalidationMessagesAreSafe(t *testing.T) {
	srv := redistest.Start(t)
	version, load := versioned()
	a := newCache(t, srv, load, localFirst...)
	b := newCache(t, srv, load, localFirst...)
	ctx := context.Background()
	applied := waitListening(t, srv, a, b, "probe")
	mustGetValue(t, b, "k", 1, "B fills its L1")

	// An instance of an earlier version invalidates k.
	version.Store(2)
	srv.CLI(t, "DEL", valueKey("k"))
	rdb := srv.Client(t)
	for _, msg := range []string{
		"0123456789abcdef.\n" + valueKey("k"), // the earlier format
		"", "\n", "\x00", "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
		"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
		"\x00\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
	} {
		if err := rdb.Publish(ctx, "ca:invalidations", msg).Err(); err != nil {
			t.Fatalf("PUBLISH %q = %v", msg, err)
		}
	}
	// Messages are applied in order: once A's next one is, so are these.
	if err := a.Invalidate(ctx, "probe"); err != nil {
		t.Fatalf("Invalidate(probe) = %v", err)
	}
	waitApplied(t, b, applied)
	mustGetValue(t, b, "k", 2, "B, after an earlier version's invalidation of k")

	hits := b.Stats().LocalHits
	mustGetValue(t, b, "k", 2, "B from its L1")
	if b.Stats().LocalHits != hits+1 {
		t.Errorf("B's Get(k) after re-reading it made no local hit: its L1 must serve again")
	}
}
