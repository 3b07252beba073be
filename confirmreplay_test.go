package cacheaside_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestReplayOneNonConfirmer: one subscriber of the channel never confirms
// (an instance of an earlier version, a redis-cli SUBSCRIBE). A queued
// Invalidate of 600 keys (3 replay batches) is replayed once Redis
// answers: Flush takes about one confirmation timeout, not one per batch.
func TestReplayOneNonConfirmer(t *testing.T) {
	srv := redistest.Start(t)
	_, load := versioned()
	const timeout = time.Second
	a := newCache(t, srv, load, cacheaside.WithSyncInvalidation(timeout), cacheaside.WithRedisTimeout(200*time.Millisecond))
	ps := srv.Client(t).Subscribe(context.Background(), "ca:invalidations")
	defer ps.Close()
	if _, err := ps.Receive(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t)
	keys := make([]string, 600)
	for i := range keys {
		keys[i] = "k" + strconv.Itoa(i)
	}
	thaw := freezeServer(t, srv)
	if err := a.Invalidate(ctx, keys...); !errors.Is(err, cacheaside.ErrQueued) {
		t.Fatalf("Invalidate with Redis frozen = %v, want ErrQueued", err)
	}
	thaw()
	start := time.Now()
	err := a.Flush(ctx)
	took := time.Since(start)
	t.Logf("Flush = %v after %v", err, took)
	if took > 2*timeout+time.Second {
		t.Errorf("Flush took %v with one subscriber that never confirms, want about one timeout (%v), not one per batch", took, timeout)
	}
}
