package redisguard

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestFrozenNodeWithServerClosedIdleConnIsSilent shows that a pooled
// connection the server closed while it sat idle (Redis's `timeout`, a
// CLIENT KILL, a proxy or load balancer that drops idle connections, a
// restart the pool has not swept yet) hides a later freeze of the node:
// the peer's FIN advances TCP_INFO's tcpi_bytes_received by one, so
// received > got on that connection for as long as go-redis leaves it in
// the idle pool (up to ConnMaxIdleTime, 30 min by default), and
// conns.replyWaiting reports a reply waiting unread. Every call to the
// frozen node is then judged slow, waits to the limit and ends overdue,
// never silent: the breaker never opens.
func TestFrozenNodeWithServerClosedIdleConnIsSilent(t *testing.T) {
	for _, inline := range []bool{false, true} {
		t.Run(fmt.Sprintf("inline=%v", inline), func(t *testing.T) {
			srv := redistest.Start(t)
			rdb, g := starvedGuard(t, srv, inline, 2)
			ctx := context.Background()
			// Two pooled connections; the one at the bottom of the (LIFO)
			// idle pool is closed by the server.
			c1, c2 := rdb.Conn(), rdb.Conn()
			id1, err := c1.ClientID(ctx).Result()
			if err != nil {
				t.Fatal(err)
			}
			if err := c2.Ping(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			_ = c1.Close() // back in the pool, below c2
			_ = c2.Close()
			if got := srv.CLI(t, "CLIENT", "KILL", "ID", fmt.Sprint(id1)); got != "1" {
				t.Fatalf("CLIENT KILL = %q", got)
			}
			time.Sleep(50 * time.Millisecond) // the FIN arrives
			setupCall(t, g, "PING", func() error {
				return g.Do(ctx, "k", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
			})
			time.Sleep(100 * time.Millisecond) // past calm, out of the cached look
			srv.Freeze()
			defer srv.Thaw()
			start := time.Now()
			calls := untilOpen(g, 8*time.Second, func() { _ = g.Do(ctx, "k", func(ctx context.Context) error { return rdb.Ping(ctx).Err() }) })
			t.Logf("calls %d took %v counts %+v", calls, time.Since(start), g.Counts())
			if took := time.Since(start); g.State() != Open || took > 2*time.Second {
				t.Errorf("breaker after %d calls to a frozen node in %v: %v, want Open within 2s (Counts() = %+v)", calls, took, g.State(), g.Counts())
			}
		})
	}
}

// TestFrozenNodeAfterServerIdleTimeoutIsSilent: the same as
// TestFrozenNodeWithServerClosedIdleConnIsSilent with no CLIENT KILL:
// Redis's own `timeout` (or a managed Redis that drops idle connections,
// as Azure Cache for Redis does after 10 minutes, below go-redis's
// default 30-minute ConnMaxIdleTime) closes the pooled connections that
// light traffic leaves idle; a later freeze is hidden by their FINs.
func TestFrozenNodeAfterServerIdleTimeoutIsSilent(t *testing.T) {
	srv := redistest.Start(t, "--timeout", "1")
	rdb, g := starvedGuard(t, srv, false, 2)
	ctx := context.Background()
	growPool(t, rdb, 4)
	// Light traffic keeps the top connection busy; the server times the
	// others out.
	pingFor(t, g, rdb, 3500*time.Millisecond)
	t.Logf("pool before the freeze: %d idle", rdb.PoolStats().IdleConns)
	srv.Freeze()
	defer srv.Thaw()
	start := time.Now()
	calls := untilOpen(g, 8*time.Second, func() { _ = g.Do(ctx, "k", func(ctx context.Context) error { return rdb.Ping(ctx).Err() }) })
	if took := time.Since(start); g.State() != Open || took > 2*time.Second {
		t.Errorf("breaker after %d calls to a frozen node in %v: %v, want Open within 2s (Counts() = %+v)", calls, took, g.State(), g.Counts())
	}
}
