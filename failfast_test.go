package cacheaside_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// A Redis that refuses connections fails fast (issue 13 item 6): go-redis
// retries a refused dial (5 times, 100 ms apart) and the command, so a call
// to a killed server runs until the budget cuts it. The guard watches the
// client's dials: once a node refused one after its last reply, a call
// waiting on it returns at once and a new call to it is not sent.

// TestKilledRedisFailsFast warms 10 keys, kills -9 Redis and gets 5 of
// them on a default client and on a ContextTimeoutEnabled client: at most
// one Get per client may wait half the Redis timeout or more (the one
// whose dial is refused first; a ContextTimeoutEnabled client's first call
// may run inline until the budget).
func TestKilledRedisFailsFast(t *testing.T) {
	for _, ctxTimeout := range []bool{false, true} {
		t.Run("ContextTimeoutEnabled="+strconv.FormatBool(ctxTimeout), func(t *testing.T) {
			srv := redistest.Start(t)
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: ctxTimeout})
			t.Cleanup(func() { _ = rdb.Close() })
			ld := &faultLoader{}
			c := newFaultCache(t, rdb, ld.load, cacheaside.WithTimeoutClone(false),
				cacheaside.WithRedisTimeout(faultBudget),
				cacheaside.WithBreaker(5, time.Minute)) // no probe during the test
			keys := faultKeys(0, 9)
			mustGetAll(t, c, keys)
			srv.Kill()

			took := make([]time.Duration, 5)
			var paid int
			for i := range took {
				took[i] = mustGet(t, c, keys[i])
				if took[i] >= faultBudget/2 {
					paid++
				}
			}
			t.Logf("5 Gets after Redis was killed (ContextTimeoutEnabled=%v, Redis timeout %v): %v", ctxTimeout, faultBudget, took)
			if paid > 1 {
				t.Errorf("%d of 5 Gets after Redis was killed took %v or more (%v), want at most 1: a refused connection fails fast",
					paid, faultBudget/2, took)
			}
			recoverServer(t, srv, rdb)
		})
	}
}

// TestClusterKilledPrimaryFailsFast kills -9 the primary that owns some
// keys: Gets of its keys fail fast (at most one per node waits half the
// Redis timeout), and keys on the other nodes stay Redis hits.
func TestClusterKilledPrimaryFailsFast(t *testing.T) {
	cl := redistest.StartCluster(t)
	rdb := cl.Client(t)
	victim := cl.PrimaryFor("0")
	var onVictim, elsewhere []int
	for k := 0; len(onVictim) < 5 || len(elsewhere) < 10; k++ {
		if cl.PrimaryFor(strconv.Itoa(k)) == victim {
			if len(onVictim) < 5 {
				onVictim = append(onVictim, k)
			}
		} else if len(elsewhere) < 10 {
			elsewhere = append(elsewhere, k)
		}
	}
	ld := &faultLoader{}
	c := newFaultCache(t, rdb, ld.load, cacheaside.WithTimeoutClone(false),
		cacheaside.WithRedisTimeout(faultBudget),
		cacheaside.WithBreaker(5, time.Minute))
	all := append(append([]int(nil), onVictim...), elsewhere...)
	mustGetAll(t, c, all)
	mustGetAll(t, c, all) // hits now
	loadsBefore := ld.calls.Load()

	cl.KillPrimaryFor("0")
	t.Cleanup(func() {
		// Let go-redis's redial goroutine for the dead node see it again
		// before goleak looks (see clusterFailover).
		victim.Start()
		time.Sleep(1500 * time.Millisecond)
	})
	took := make([]time.Duration, len(onVictim))
	var paid int
	for i, k := range onVictim {
		took[i] = mustGet(t, c, k)
		if took[i] >= faultBudget/2 {
			paid++
		}
	}
	t.Logf("%d Gets of the killed primary's keys (Redis timeout %v): %v", len(onVictim), faultBudget, took)
	if paid > 1 {
		t.Errorf("%d of %d Gets of the killed primary's keys took %v or more (%v), want at most 1: a refused connection fails fast",
			paid, len(onVictim), faultBudget/2, took)
	}
	loadsVictim := ld.calls.Load() - loadsBefore
	mustGetAll(t, c, elsewhere)
	if n := ld.calls.Load() - loadsBefore - loadsVictim; n != 0 {
		t.Errorf("keys on the live nodes were loaded %d times after another node was killed, want 0 (hits)", n)
	}
}
