package inspect_test

import (
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestClusterBreakersPerNode reads keys on every primary of a Cluster,
// kills the primary of one, and checks that the inspector names each
// key's node and shows that node's breaker open and the others closed.
func TestClusterBreakersPerNode(t *testing.T) {
	cl := redistest.StartCluster(t)
	r := newRig(t, cl.Client(t), loadItem, cacheaside.WithCircuitBreaker(cacheaside.CircuitBreaker{Failures: 1, Cooldown: time.Minute}), cacheaside.WithRedisTimeout(time.Second))
	ctx := ctxFor(t)
	for id := range int64(30) {
		if _, err := r.cache.Get(ctx, id); err != nil {
			t.Fatalf("Get(%d) = %v", id, err)
		}
	}
	rep := r.report(t, "7")
	for node, st := range rep.Breakers {
		if st != cacheaside.BreakerClosed {
			t.Errorf("breaker of node %q = %s before any failure, want closed", node, st)
		}
	}
	// One breaker per primary the keys live on. (A busy machine can show
	// one more: a node the client's slot map named while the fresh
	// cluster converged, seen once with two test suites at once.)
	primaries := map[string]bool{}
	for id := range int64(30) {
		primaries[cl.PrimaryFor(r.cache.RedisKey(id)).Addr()] = true
	}
	for addr := range primaries {
		if _, ok := rep.Breakers[addr]; !ok {
			t.Errorf("breakers = %v after 30 keys, want one for primary %s", rep.Breakers, addr)
		}
	}
	if len(primaries) != 3 {
		t.Errorf("30 keys live on %d primaries, want all 3", len(primaries))
	}
	victim := cl.PrimaryFor(r.cache.RedisKey(7))
	if rep.Entry.Node != victim.Addr() || !rep.Entry.Value.Exists {
		t.Errorf("entry of 7: node %q, value %+v; want node %s and a value", rep.Entry.Node, rep.Entry.Value, victim.Addr())
	}

	cl.KillPrimaryFor(r.cache.RedisKey(7))
	if v, err := r.cache.Get(ctx, 7); err != nil || v.ID != 7 {
		t.Fatalf("Get(7) with its primary dead = %+v, %v, want item 7 from the loader", v, err)
	}
	rep = r.report(t, "7")
	for node, st := range rep.Breakers {
		want := cacheaside.BreakerClosed
		if node == victim.Addr() {
			want = cacheaside.BreakerOpen
		}
		if node != "" && st != want {
			t.Errorf("breaker of node %s = %s after killing %s, want %s", node, st, victim.Addr(), want)
		}
	}
	if rep.Breakers[victim.Addr()] != cacheaside.BreakerOpen {
		t.Errorf("breakers = %v, want %s open", rep.Breakers, victim.Addr())
	}
	if rep.Stats.Breaker != cacheaside.BreakerOpen || rep.Stats.BreakerOpens != 1 {
		t.Errorf("stats: breaker %s, opens %d; want open, 1", rep.Stats.Breaker, rep.Stats.BreakerOpens)
	}
}
