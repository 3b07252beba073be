package cacheaside_test

import (
	"strings"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestLocalPrefillServesUnreadKeysInOutage: process A warms 20 keys into
// Redis. Process B, with WithLocalPrefill, never reads them, yet answers
// all of them from its L1 after Redis dies, without a load; process C,
// without it, must load every one.
func TestLocalPrefillServesUnreadKeysInOutage(t *testing.T) {
	srv := redistest.Start(t)
	keys := faultKeys(1, 20)
	common := []cacheaside.Option{
		cacheaside.WithPrefix("pf:"),
		cacheaside.WithLocalCache(100, 3*time.Second),
		cacheaside.WithWarmupKeys(keys...),
		cacheaside.WithRestartCheck(0),
		// Not about the timeout: the outage is a killed server, whose
		// refused connections fail at once. With 100ms, A's warm-up on a
		// machine at load 20 found Redis silent and failed the setup.
		cacheaside.WithRedisTimeout(redisTimeout),
	}
	ldA, ldB, ldC := &faultLoader{}, &faultLoader{}, &faultLoader{}
	a := newFaultCache(t, newFaultClient(t, srv.Addr()), ldA.load, common...)
	b := newFaultCache(t, newFaultClient(t, srv.Addr()), ldB.load, append(common, cacheaside.WithLocalPrefill(true))...)
	c := newFaultCache(t, newFaultClient(t, srv.Addr()), ldC.load, common...)
	if err := a.Warm(testContext(t)); err != nil {
		t.Fatalf("A.Warm() = %v", err)
	}
	time.Sleep(1700 * time.Millisecond) // B's prefill runs every 1.5s (half the L1 TTL)

	srv.Kill()
	mustGetAll(t, b, keys)
	mustGetAll(t, c, keys)
	if n, st := ldB.calls.Load(), b.Stats(); n != 0 || st.LocalHits != uint64(len(keys)) {
		t.Errorf("B (prefill) made %d loads and %d local hits for %d keys it never read, want 0 and %d; Stats %+v",
			n, st.LocalHits, len(keys), len(keys), st)
	}
	if n := ldC.calls.Load(); n != int64(len(keys)) {
		t.Errorf("C (no prefill) made %d loads, want %d: its L1 holds nothing it did not read", n, len(keys))
	}
}

func TestLocalPrefillNeedsLocalCache(t *testing.T) {
	srv := redistest.Start(t)
	_, err := cacheaside.New(srv.Client(t), (&faultLoader{}).load, cacheaside.WithLocalPrefill(true))
	if err == nil || !strings.Contains(err.Error(), "WithLocalPrefill") {
		t.Errorf("New(WithLocalPrefill without WithLocalCache) = %v, want an error naming WithLocalPrefill", err)
	}
}
