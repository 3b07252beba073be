package cacheaside_test

import (
	"context"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestFillLockLostInFailover shows what a failover does to a fill lock, and
// that it costs a load, never a stale value.
//
// Redis replicates asynchronously: a primary acknowledges a write before
// its replica has it, so a replica promoted after the primary died may lack
// the last writes, among them a fill lock. The test makes that lag
// deterministic: the replica stops replicating (REPLICAOF NO ONE) before
// instance A takes the lock on the primary and starts a slow load. Then the
// primary is killed (-9) and the clients' address moves to the replica, the
// way a virtual IP or DNS name moves on a managed Redis. The row changes
// and instance B invalidates the key on the new primary.
//
// The lock is gone, so B loads the key too while A's load is still running:
// two loads, which is the lock's whole job lost, nothing more. A's load
// read the row before the Invalidate; its fill is conditional on the
// generation it saw at the start, which the Invalidate replaced, so it is
// refused, and A answers with the new value that B stored.
func TestFillLockLostInFailover(t *testing.T) {
	primary := redistest.Start(t)
	replica := redistest.Start(t, "--replicaof", "127.0.0.1", strconv.Itoa(primary.Port()))
	waitFor(t, 10*time.Second, "the replica is in sync", func() bool {
		return strings.Contains(replica.CLI(t, "INFO", "replication"), "master_link_status:up")
	})

	var target atomic.Value // the address "the primary" resolves to
	target.Store(primary.Addr())
	newClient := func() *redis.Client {
		rdb := redis.NewClient(&redis.Options{
			Addr: "redis-primary.invalid:6379",
			Dialer: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, target.Load().(string))
			},
		})
		t.Cleanup(func() { _ = rdb.Close() })
		return rdb
	}

	var (
		version  atomic.Int64 // the row's version: the loader returns "v<version>"
		calls    atomic.Int64
		aRead    = make(chan struct{})
		aRelease = make(chan struct{})
	)
	version.Store(1)
	load := func(ctx context.Context, k int) (string, error) {
		n := calls.Add(1)
		v := "v" + strconv.FormatInt(version.Load(), 10)
		if n == 1 { // A's load: it has read the row; it stalls until released
			close(aRead)
			select {
			case <-aRelease:
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}
		return v, nil
	}
	opts := []cacheaside.Option{cacheaside.WithRedisTimeout(time.Second), cacheaside.WithLockTTL(30 * time.Second)}
	rdbA, rdbB := newClient(), newClient()
	a := newFaultCache(t, rdbA, load, opts...)
	b := newFaultCache(t, rdbB, load, opts...)
	ctx := testContext(t)
	const key = 7
	lockKey := valueKey(strconv.Itoa(key)) + ":lock"

	// The replica falls behind for good: what the primary gets from now on
	// is what a failover loses.
	replica.CLI(t, "REPLICAOF", "NO", "ONE")

	aDone := getAsync(ctx, a, key)
	await(t, aRead, "A's load starts")
	if got := primary.CLI(t, "EXISTS", lockKey); got != "1" {
		t.Fatalf("EXISTS %s on the primary = %s, want 1: A holds the fill lock", lockKey, got)
	}
	if got := replica.CLI(t, "EXISTS", lockKey); got != "0" {
		t.Fatalf("EXISTS %s on the replica = %s, want 0: the lock was written after the replica fell behind", lockKey, got)
	}

	// Failover: the primary dies, the address moves to the replica.
	target.Store(replica.Addr())
	primary.Kill()
	for _, rdb := range []*redis.Client{rdbA, rdbB} {
		waitFor(t, 5*time.Second, "the clients reach the new primary", func() bool {
			// Each failed Ping drops one dead pooled connection.
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			return rdb.Ping(pctx).Err() == nil && rdb.Ping(pctx).Err() == nil
		})
	}

	// The row changes; B invalidates on the new primary, then reads.
	version.Store(2)
	if err := b.Invalidate(ctx, key); err != nil {
		t.Fatalf("B.Invalidate after the failover: %v", err)
	}
	if v, err := b.Get(ctx, key); err != nil || v != "v2" {
		t.Fatalf("B.Get = %q, %v, want v2, nil", v, err)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("loader calls = %d, want 2: B had to load, since the lock A held was lost with the old primary", n)
	}

	close(aRelease)
	res := await(t, aDone, "A's Get")
	if res.err != nil || res.val != "v2" {
		t.Errorf("A.Get = %q, %v, want v2, nil: A's load read the row before the Invalidate and must not be handed out or written", res.val, res.err)
	}
	if got := replica.CLI(t, "GET", valueKey(strconv.Itoa(key))); !strings.Contains(got, "v2") || strings.Contains(got, "v1") {
		t.Errorf("the new primary stores %q, want the v2 entry", got)
	}
	if st := a.Stats(); st.FillConflicts == 0 {
		t.Errorf("A's Stats().FillConflicts = 0, want its fill of v1 refused; Stats %+v", st)
	}
	t.Logf("loader calls: %d (A's stale v1 discarded, B's v2 stored); A: %+v", calls.Load(), a.Stats())
}
