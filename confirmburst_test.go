package cacheaside_test

import (
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestSyncInvalidationBurst: 200 synchronous Invalidates at once on a
// healthy Redis, with every instance confirming promptly, beside 200 Gets:
// none of them fails. A textbook cache returns no error here; the
// confirmations' waits must not turn a burst into ErrNotConfirmed, nor
// take the Gets' Redis calls from them.
func TestSyncInvalidationBurst(t *testing.T) {
	for _, cte := range []bool{false, true} {
		t.Run("ContextTimeoutEnabled="+strconv.FormatBool(cte), func(t *testing.T) {
			srv := redistest.Start(t)
			_, load := versioned()
			opts := append(append([]cacheaside.Option{}, localFirst...), cacheaside.WithSyncInvalidation(5*time.Second), cacheaside.WithRedisTimeout(time.Second))
			fleet := make([]*cacheaside.Cache[string, int64], 3)
			for i := range fleet {
				rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: cte})
				t.Cleanup(func() { _ = rdb.Close() })
				fleet[i] = newCacheOn(t, rdb, load, opts...)
			}
			waitSubscribed(t, srv, len(fleet))
			for _, c := range fleet[1:] {
				waitConfirmed(t, fleet[0], c)
			}
			a := fleet[0]
			ctx := testContext(t)
			const n = 200
			var invErrs, getErrs atomic.Int64
			var first atomic.Pointer[error]
			var wg sync.WaitGroup
			start := time.Now()
			for i := range n {
				wg.Go(func() {
					if err := a.Invalidate(ctx, "k"+strconv.Itoa(i)); err != nil {
						invErrs.Add(1)
						first.CompareAndSwap(nil, &err)
					}
				})
				wg.Go(func() {
					if _, err := a.Get(ctx, "g"+strconv.Itoa(i)); err != nil {
						getErrs.Add(1)
						first.CompareAndSwap(nil, &err)
					}
				})
			}
			wg.Wait()
			took := time.Since(start)
			var e error
			if p := first.Load(); p != nil {
				e = *p
			}
			t.Logf("%d sync Invalidates + %d Gets at once: %v; Invalidate errors %d, Get errors %d (first: %v; ErrNotConfirmed: %v)", n, n, took, invErrs.Load(), getErrs.Load(), e, errors.Is(e, cacheaside.ErrNotConfirmed))
			if invErrs.Load() != 0 || getErrs.Load() != 0 {
				t.Errorf("%d of %d synchronous Invalidates and %d of %d Gets failed on a healthy Redis (first: %v), want none", invErrs.Load(), n, getErrs.Load(), n, e)
			}
		})
	}
}
