package cacheaside_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestLoadUnderLockWhenRedisDies: a flight takes the fill lock, Redis is
// killed (kill -9) during its load, and the fill cannot be checked (the
// clock MGET fails). That is an outage, not a Clear: the result goes to
// the caller and to L1, and the flight does not load the key again (it
// did: "queried one key 5 times" in examples/outage). A Get after it
// answers from L1 without a load.
func TestLoadUnderLockWhenRedisDies(t *testing.T) {
	srv := redistest.Start(t)
	rdb := newFaultClient(t, srv.Addr())
	var loads atomic.Int64
	inLoad, killed := make(chan struct{}), make(chan struct{})
	load := func(ctx context.Context, k int) (string, error) {
		if loads.Add(1) == 2 { // the first load is the warming Get below
			close(inLoad)
			<-killed
		}
		return faultValue(k), nil
	}
	c := newFaultCache(t, rdb, load, cacheaside.WithRedisTimeout(200*time.Millisecond),
		cacheaside.WithL1(cacheaside.L1{OutageOnly: true}))
	mustGet(t, c, 0) // connects and creates the prefix's clock (clockloss.go)
	go func() {
		<-inLoad
		srv.Kill()
		close(killed)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), faultGetTimeout)
	defer cancel()
	if v, err := c.Get(ctx, 1); err != nil || v != faultValue(1) {
		t.Fatalf("Get(1) during the kill = %q, %v, want %q, nil", v, err, faultValue(1))
	}
	if n := loads.Load() - 1; n != 1 {
		t.Errorf("Get(1) loaded key 1 %d times, want 1", n)
	}
	if v, err := c.Get(ctx, 1); err != nil || v != faultValue(1) {
		t.Fatalf("Get(1) in the outage = %q, %v, want %q, nil", v, err, faultValue(1))
	}
	if n := loads.Load() - 1; n != 1 {
		t.Errorf("after a second Get(1) in the outage key 1 was loaded %d times, want 1 (from L1)", n)
	}
}
