package cacheaside_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestCloseOnAFrozenRedisIsBounded: Caches with an L1 share one client
// (one subscription, a registry entry per prefix) and Redis freezes.
// Closing each but the last removes its registry entry for at most a
// second (unregisterTimeout), as documented, not for the client's read
// timeout: go-redis ignores a context's deadline unless the client sets
// ContextTimeoutEnabled, and each Close took 5s, N Caches 5N seconds.
func TestCloseOnAFrozenRedisIsBounded(t *testing.T) {
	srv := redistest.Start(t)
	_, load := versioned()
	rdb := srv.Client(t)
	caches := make([]*cacheaside.Cache[string, int64], 3)
	for i := range caches {
		opts := append(append([]cacheaside.Option{}, localFirst...), cacheaside.WithPrefix(fmt.Sprintf("p%d:", i)))
		caches[i] = newCacheOn(t, rdb, load, opts...)
	}
	waitFor(t, waitLimit, "every prefix has a lease in its registry", func() bool {
		for i := range caches {
			if srv.CLI(t, "ZCARD", fmt.Sprintf("{p%d:invalidations}:live", i)) != "1" {
				return false
			}
		}
		return true
	})
	srv.Freeze()
	defer srv.Thaw()
	const bound = 2500 * time.Millisecond // 1s and a margin for a loaded machine
	for i, c := range caches[:len(caches)-1] {
		start := time.Now()
		err := c.Close()
		if took := time.Since(start); took > bound {
			t.Errorf("Close() of Cache %d of %d on a frozen Redis took %v (err %v), want at most %v", i, len(caches), took, err, bound)
		}
	}
}
