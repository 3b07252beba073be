package cacheaside_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/integration/faultproxy"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// The tests in this file put a fault proxy (Toxiproxy, in-process) between
// the cache and a real redis-server and add latency, swallow all traffic or
// cut a holder off while Gets run. They live in this module so that the
// root module's go.mod does not require Toxiproxy; the faults a real
// process can show (SIGKILL, SIGSTOP, an empty restart) are tested in the
// root's fault_test.go.

func TestGetSurvivesBlackhole(t *testing.T) {
	for _, m := range budgetModes {
		t.Run(m.name, func(t *testing.T) {
			holed := survivesProxyFault(t, m.opt, "a black hole", func(px *faultproxy.Proxy) { px.Blackhole(t) })
			if (holed.Abandoned == 0) == m.abandons {
				t.Errorf("Stats().Abandoned = %d, want calls abandoned at the Redis timeout: %v", holed.Abandoned, m.abandons)
			}
		})
	}
}

// survivesProxyFault runs survivesFault through a fault proxy in front of
// a server of its own; inject puts the fault on the proxy, and removing it
// resets the proxy. It returns the Stats taken just before the fault was
// removed.
func survivesProxyFault(t *testing.T, opt cacheaside.Option, fault string, inject func(px *faultproxy.Proxy)) cacheaside.Stats {
	t.Helper()
	srv := redistest.Start(t)
	px := faultproxy.New(t, srv.Addr())
	_, during := survivesFault(t, newFaultClient(t, px.Addr()), []cacheaside.Option{opt}, fault,
		func() {
			inject(px)
			t.Cleanup(func() { px.Reset(t) }) // before the cache closes, should the test fail
		}, func() { px.Reset(t) })
	return during
}

func TestGetSurvivesSlowRedis(t *testing.T) {
	for _, m := range budgetModes {
		t.Run(m.name, func(t *testing.T) {
			slow := survivesProxyFault(t, m.opt, "every reply late", func(px *faultproxy.Proxy) { px.AddLatency(t, 3*faultBudget, 0) })
			if slow.Loads <= 20 || (slow.Abandoned == 0) == m.abandons {
				t.Errorf("Stats() = %+v while slow, want loads, and calls abandoned at the Redis timeout: %v", slow, m.abandons)
			}
		})
	}
}

// TestSlowAcquireLeavesNoStrayLock lets Redis answer some calls later than
// the Redis timeout, as a latency spike does. A lock-taking script that the
// cache abandoned still runs on the server and takes the fill lock with a
// token nobody holds; a later Get of that key must not wait for that lock
// to expire (WithLockTTL, 3s by default).
func TestSlowAcquireLeavesNoStrayLock(t *testing.T) {
	for _, m := range budgetModes {
		t.Run(m.name, func(t *testing.T) {
			srv := redistest.Start(t)
			px := faultproxy.New(t, srv.Addr())
			rdb := newFaultClient(t, px.Addr())
			ld := &faultLoader{}
			c := newFaultCache(t, rdb, ld.load,
				cacheaside.WithRedisTimeout(faultBudget),
				cacheaside.WithCircuitBreaker(cacheaside.CircuitBreaker{Failures: -1}), // every call goes to Redis
				cacheaside.WithPrefix("stray:"), m.opt)
			keys := faultKeys(0, 39)
			getConcurrently(t, c, faultKeys(100, 139)) // opens the pool's connections

			px.AddLatency(t, faultBudget, faultBudget*9/10) // replies take 10ms to 190ms
			t.Cleanup(func() { px.Reset(t) })
			getConcurrently(t, c, keys)
			time.Sleep(3 * faultBudget) // late replies arrive
			px.Reset(t)
			stray := strings.Trim(srv.CLI(t, "KEYS", "stray:*:lock"), "[]")
			var slow []string
			for _, k := range keys {
				if took := mustGet(t, c, k); took > 3*faultBudget+faultSlack {
					slow = append(slow, fmt.Sprintf("Get(%d) took %v", k, took))
				}
			}
			if len(slow) > 0 {
				t.Errorf("after a latency spike, Gets waited for fill locks that abandoned calls took and nobody holds: %v; "+
					"want each Get within %v; locks left behind: [%s]", slow, 3*faultBudget+faultSlack, stray)
			}
		})
	}
}

// TestRedisSlowsDuringLoad makes Redis slow while a load runs, so that the
// conditional fill after it is abandoned at the Redis timeout but still
// runs on the server (or the clock read before it is abandoned, and the
// fill refused). Get must return the loaded value at once, no lock may be
// left behind, and the abandoned calls must not touch memory the flight
// still reads (under -race a data race fails this test).
func TestRedisSlowsDuringLoad(t *testing.T) {
	for _, m := range budgetModes {
		t.Run(m.name, func(t *testing.T) {
			srv := redistest.Start(t)
			px := faultproxy.New(t, srv.Addr())
			rdb := newFaultClient(t, px.Addr())
			loading, slowed := make(chan int, 1), make(chan struct{})
			c := newFaultCache(t, rdb, func(ctx context.Context, k int) (string, error) {
				if k == 1 {
					loading <- k
					<-slowed
				}
				return faultValue(k), nil
			}, cacheaside.WithRedisTimeout(faultBudget), cacheaside.WithCircuitBreaker(cacheaside.CircuitBreaker{Failures: -1}), cacheaside.WithPrefix("slowfill:"), m.opt)
			mustGet(t, c, 0) // opens a connection

			got := make(chan time.Duration, 1)
			go func() {
				start := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), faultGetTimeout)
				defer cancel()
				if v, err := c.Get(ctx, 1); err != nil || v != faultValue(1) {
					t.Errorf("Get(1) = %q, %v, want %q, nil", v, err, faultValue(1))
				}
				got <- time.Since(start)
			}()
			select {
			case <-loading:
			case <-time.After(faultGetTimeout):
				t.Fatal("the loader of key 1 was not called")
			}
			px.AddLatency(t, 3*faultBudget, 0)
			t.Cleanup(func() { px.Reset(t) })
			close(slowed)
			if took := <-got; took > 3*faultBudget+faultSlack {
				t.Errorf("Get(1) with a fill slower than the Redis timeout took %v, want at most %v", took, 3*faultBudget+faultSlack)
			}
			time.Sleep(4 * faultBudget) // the late replies arrive
			// The clock read before the fill (a Clear during the load
			// refuses it) is cut at the Redis timeout too; then the result
			// is handed out like a load without the lock, the fill not sent
			// and the lock given back. Either way the late calls land and
			// release the lock.
			waitFor(t, 10*time.Second, "the late fill or give-back lands and releases the lock", func() bool {
				return srv.CLI(t, "EXISTS", "slowfill:{1}:lock") == "0"
			})
		})
	}
}

// TestLockOfHolderCutOffFromRedisExpires: the heartbeat keeps a lock alive
// only while its holder reaches Redis. A holder cut off from Redis in the
// middle of its load stops extending its lock, which then expires within
// the lock TTL, and a Get on another instance takes the lock over. The
// holder's Redis timeout and the lock TTL leave room for a loaded machine:
// with 100ms and 300ms, three extensions in a row past 100ms (two test
// suites at once) let the lock lapse while the holder still reached Redis.
func TestLockOfHolderCutOffFromRedisExpires(t *testing.T) {
	srv := redistest.Start(t)
	px := faultproxy.New(t, srv.Addr())
	const lockTTL = time.Second
	entered, release := make(chan struct{}, 1), make(chan struct{})
	holder := newFaultCache(t, newFaultClient(t, px.Addr()), func(ctx context.Context, k int) (string, error) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return "from the holder", nil
	}, cacheaside.WithRedisTimeout(lockTTL), cacheaside.WithFillLock(cacheaside.FillLock{TTL: lockTTL}))
	t.Cleanup(func() {
		close(release)
		px.Disable(t) // ends the calls the holder is still waiting on, before its Close waits for them
	})
	ld := &faultLoader{}
	other := newCache(t, srv, ld.load, cacheaside.WithFillLock(cacheaside.FillLock{TTL: lockTTL}))
	ctx := testContext(t)
	_ = getAsync(ctx, holder, 1)
	await(t, entered, "the holder's load to start")
	time.Sleep(2 * lockTTL)
	if ex := srv.CLI(t, "EXISTS", valueKey("1")+":lock"); ex != "1" {
		t.Fatalf("EXISTS %s:lock two lock TTLs into the holder's load = %s, want 1 (kept alive)", valueKey("1"), ex)
	}
	px.Blackhole(t)
	cut := time.Now()
	if got, err := other.Get(ctx, 1); err != nil || got != faultValue(1) {
		t.Errorf("Get(1) on another instance = %q, %v; want %q, nil", got, err, faultValue(1))
	}
	if took, limit := time.Since(cut), 2*lockTTL+faultSlack; took > limit {
		t.Errorf("Get(1) on another instance took %v after the holder was cut off, want at most %v (the lock TTL, polls and slack)", took, limit)
	}
	if n := ld.calls.Load(); n != 1 {
		t.Errorf("other instance's loader called %d times, want 1 (it took the lock over)", n)
	}
}
