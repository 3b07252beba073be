package cacheaside_test

import (
	"log/slog"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// The tests in this file break a real redis-server (SIGKILL, SIGSTOP, an
// empty restart) while Gets run, and check that no Get sees an error and
// none waits much longer than the Redis timeout. The faults a proxy makes
// (a black hole, added latency) are tested in the integration module, which
// keeps Toxiproxy out of this module's go.mod.

func TestGetSurvivesRedisKill(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ld := &faultLoader{}
	var logs syncBuffer
	c := newFaultCache(t, rdb, ld.load,
		cacheaside.WithRedisTimeout(faultBudget),
		cacheaside.WithBreaker(5, 300*time.Millisecond),
		cacheaside.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	keys := faultKeys(0, 49)
	mustGetAll(t, c, keys)

	storm := startGetStorm(c, 4, len(keys))
	time.Sleep(200 * time.Millisecond)
	srv.Kill()
	waitFor(t, 5*time.Second, "the breaker opens after Redis was killed", func() bool {
		return c.Stats().Breaker == cacheaside.BreakerOpen
	})
	open := c.Stats()
	if open.BreakerOpens < 1 {
		t.Errorf("Stats().BreakerOpens = %d with the breaker open, want ≥ 1", open.BreakerOpens)
	}
	waitFor(t, 2*time.Second, "Gets skip Redis while the breaker is open", func() bool {
		return c.Stats().RedisSkipped > open.RedisSkipped
	})
	time.Sleep(500 * time.Millisecond) // the outage goes on, Gets keep going to the loader

	srv.Start() // empty
	restarted := c.Stats()
	waitFor(t, 10*time.Second, "the breaker closes and Gets hit Redis again", func() bool {
		s := c.Stats()
		return s.Breaker == cacheaside.BreakerClosed && s.Hits > restarted.Hits+uint64(len(keys))
	})
	storm.halt(t, faultBudget*3+faultSlack)

	s := c.Stats()
	if s.RedisErrors == 0 || s.Loads <= uint64(len(keys)) {
		t.Errorf("Stats() = %+v, want Redis errors and loads during the outage", s)
	}
	mustGetAll(t, c, keys) // fills what the storm did not
	before := c.Stats()
	mustGetAll(t, c, keys)
	after := c.Stats()
	if hits, loads := after.Hits-before.Hits, after.Loads-before.Loads; hits != uint64(len(keys)) || loads != 0 {
		t.Errorf("after recovery, %d Gets made %d hits and %d loads, want %d hits and no load", len(keys), hits, loads, len(keys))
	}
	for _, to := range []string{"to=open", "to=closed"} {
		if !strings.Contains(logs.String(), to) {
			t.Errorf("log has no breaker change %s:\n%s", to, logs.String())
		}
	}
}

func TestGetSurvivesFrozenRedis(t *testing.T) {
	for _, m := range budgetModes {
		t.Run(m.name, func(t *testing.T) {
			srv := redistest.Start(t)
			var thaw func()
			c, _ := survivesFault(t, srv.Client(t), []cacheaside.Option{m.opt}, "Redis frozen",
				func() { thaw = freezeServer(t, srv) }, func() { thaw() })
			if s := c.Stats(); (s.Abandoned == 0) == m.abandons || s.Loads <= 20 {
				t.Errorf("Stats() = %+v, want loads during the freeze and calls abandoned at the Redis timeout: %v", s, m.abandons)
			}
			start := time.Now()
			if err := c.Close(); err != nil {
				t.Errorf("Close() = %v, want nil", err)
			}
			// Abandoned calls end once the thawed server answers them.
			if took := time.Since(start); took > 4*time.Second {
				t.Errorf("Close() after the thaw took %v, want under the client's read timeout", took)
			}
		})
	}
}

func TestGetSurvivesFlappingRedis(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ld := &faultLoader{delay: 5 * time.Millisecond}
	c := newFaultCache(t, rdb, ld.load,
		cacheaside.WithRedisTimeout(faultBudget),
		cacheaside.WithBreaker(5, 200*time.Millisecond))
	keys := faultKeys(0, 49)
	mustGetAll(t, c, keys)
	baseline := runtime.NumGoroutine()

	storm := startGetStorm(c, 8, len(keys))
	for start := time.Now(); time.Since(start) < 3*time.Second; {
		srv.Kill()
		time.Sleep(250 * time.Millisecond)
		srv.Start()
		time.Sleep(250 * time.Millisecond)
	}
	recoverServer(t, srv, rdb)
	waitFor(t, 10*time.Second, "the breaker closes once Redis is stable", func() bool {
		return c.Stats().Breaker == cacheaside.BreakerClosed
	})
	// A lock script whose reply was lost may have run on a server that came
	// back, leaving a lock nobody holds (see TestSlowAcquireLeavesNoStrayLock):
	// allow a wait of the default lock TTL.
	storm.halt(t, 3*time.Second+3*faultBudget+faultSlack)

	waitFor(t, 10*time.Second, "goroutines return to the baseline after the flapping", func() bool {
		return runtime.NumGoroutine() <= baseline+2
	})
	if st, size := rdb.PoolStats(), rdb.Options().PoolSize; int(st.TotalConns) > size {
		t.Errorf("PoolStats().TotalConns = %d, want at most PoolSize %d", st.TotalConns, size)
	}
	if s := c.Stats(); s.RedisErrors == 0 || s.BreakerOpens == 0 {
		t.Errorf("Stats() = %+v, want Redis errors and breaker opens during the flapping", s)
	}
}

func TestMaxConcurrentLoadsDuringOutage(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ld := &faultLoader{delay: 50 * time.Millisecond}
	c := newFaultCache(t, rdb, ld.load,
		cacheaside.WithRedisTimeout(faultBudget),
		cacheaside.WithMaxConcurrentLoads(2))
	mustGet(t, c, -1) // connect
	srv.Kill()

	keys := faultKeys(0, 19)
	getConcurrently(t, c, keys)
	if got := ld.maxRunning.Load(); got > 2 {
		t.Errorf("%d loads ran at once, want at most 2 (WithMaxConcurrentLoads(2))", got)
	}
	if got := ld.calls.Load(); got < int64(len(keys))+1 {
		t.Errorf("loader called %d times, want %d", got, len(keys)+1)
	}
	recoverServer(t, srv, rdb)
}

// TestTimeoutCloneSharesPool: with WithTimeoutClone on a default
// *redis.Client, the cache's calls use the client's own connection pool
// (no extra connections) and none is abandoned. It also logs whether the
// client's hooks saw them (go-redis v9.23 does not carry hooks over to
// the clone, which WithTimeoutClone's documentation states).
func TestTimeoutCloneSharesPool(t *testing.T) {
	srv := redistest.Start(t)
	rdb := newFaultClient(t, srv.Addr())
	var wire netCounter
	rdb.AddHook(&wire)
	ld := &faultLoader{}
	c := newFaultCache(t, rdb, ld.load, cacheaside.WithTimeoutClone(true))
	mustGetAll(t, c, faultKeys(0, 9))
	mustGetAll(t, c, faultKeys(0, 9))
	if st := rdb.PoolStats(); st.TotalConns == 0 || st.Hits+st.Misses == 0 {
		t.Errorf("the client's pool was not used by the cache's Gets, want the clone to share it: %+v", st)
	}
	if st := c.Stats(); st.Hits != 10 || st.Abandoned != 0 {
		t.Errorf("Stats() = %+v, want 10 hits and nothing abandoned", st)
	}
	t.Logf("the client's hook saw %d of the cache's commands", wire.commands.Load())
}
