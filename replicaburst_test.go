package cacheaside_test

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestReplicaAcksBurst: 200 Sets at once with WithReplicaAcks on a
// healthy primary and replica, through a client without
// ContextTimeoutEnabled: none fails. Each WAIT holds one of the
// abandoned-call slots; past them a Set must wait its turn, not fail as
// if Redis were down.
func TestReplicaAcksBurst(t *testing.T) {
	p := redistest.Start(t)
	redistest.StartReplica(t, p)
	_, load := versioned()
	c := newCacheOn(t, p.Client(t), load, cacheaside.WithRedisTimeout(time.Second), cacheaside.WithReplicaAcks(1, time.Second))
	ctx := testContext(t)
	const n = 200
	var failed atomic.Int64
	var first atomic.Pointer[error]
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := c.Set(ctx, "k"+strconv.Itoa(i), int64(i)); err != nil {
				failed.Add(1)
				first.CompareAndSwap(nil, &err)
			}
		})
	}
	wg.Wait()
	if f := failed.Load(); f != 0 {
		t.Errorf("%d of %d Sets with WithReplicaAcks failed on a healthy primary and replica (first: %v), want none", f, n, *first.Load())
	}
}
