package redistest_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// setGet writes and reads back keys through rdb.
func setGet(t *testing.T, rdb redis.UniversalClient, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range n {
		k := "topology:" + strconv.Itoa(i)
		if err := rdb.Set(ctx, k, "v"+strconv.Itoa(i), 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
		if got, err := rdb.Get(ctx, k).Result(); err != nil || got != "v"+strconv.Itoa(i) {
			t.Fatalf("GET %s = %q, %v, want %q", k, got, err, "v"+strconv.Itoa(i))
		}
	}
}

func TestTopologyCluster(t *testing.T) {
	c := redistest.StartCluster(t)
	if got := len(c.Addrs()); got != 6 {
		t.Fatalf("len(Addrs()) = %d, want 6", got)
	}
	setGet(t, c.Client(t), 50)
	// Keys spread over all three primaries.
	owners := map[string]bool{}
	for i := range 50 {
		owners[c.PrimaryFor("topology:"+strconv.Itoa(i)).Addr()] = true
	}
	if len(owners) != 3 {
		t.Fatalf("keys landed on %d primaries, want 3", len(owners))
	}
}

func TestTopologySentinel(t *testing.T) {
	s := redistest.StartSentinel(t)
	if s.MasterName() == "" || len(s.SentinelAddrs()) != 3 {
		t.Fatalf("MasterName() = %q, SentinelAddrs() = %v", s.MasterName(), s.SentinelAddrs())
	}
	setGet(t, s.Client(t), 20)
	if p := s.Primary(); p != s.Servers()[0] {
		t.Fatalf("Primary() = %s, want initial primary %s", p.Addr(), s.Servers()[0].Addr())
	}
}
