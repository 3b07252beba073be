package redistest_test

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestProbeStallsSeesAFrozenServer: a server frozen for 600ms while a
// stall probe runs shows as a slow round trip within the freeze, on a
// single server and on one primary of a Cluster (the probe reads each).
// Only that a stall is seen is checked: on a busy machine the probe may
// see others too.
func TestProbeStallsSeesAFrozenServer(t *testing.T) {
	const over, frozen = 200 * time.Millisecond, 600 * time.Millisecond
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) (redis.UniversalClient, *redistest.Server)
	}{
		{"server", func(t *testing.T) (redis.UniversalClient, *redistest.Server) {
			s := redistest.Start(t)
			return s.Client(t), s
		}},
		{"cluster", func(t *testing.T) (redis.UniversalClient, *redistest.Server) {
			c := redistest.StartCluster(t)
			return c.Client(t), c.PrimaryFor("frozen")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb, victim := tc.setup(t)
			stop := redistest.ProbeStalls(t, rdb, over)
			from := time.Now()
			victim.Freeze()
			time.Sleep(frozen)
			victim.Thaw()
			to := time.Now()
			stalls := stop()
			if !stalls.During(from, to) || stalls.Slowest <= over {
				t.Errorf("ProbeStalls over a server frozen for %v = %+v, want a round trip over %v within the freeze", frozen, stalls, over)
			}
		})
	}
}
