package redistest

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// A test whose bound a starved redis-server or a starved test process may
// overrun (two suites at once on two cores do) cannot tell that apart from
// the defect it looks for by its own calls alone. A stall probe tells it:
// it sends PING on a client of its own, one after another, and reports
// the round trips that took longer than a threshold. When such a round
// trip overlaps what the test measured, Redis (or the machine) answered
// nothing for that long, which no code under test can help.

// probeInterval is how long a probe waits between a reply and its next
// PING.
const probeInterval = 5 * time.Millisecond

// Stall is one probe round trip that took longer than the threshold: when
// it ended (or the probe stopped, for one still waiting then) and how long
// it took.
type Stall struct {
	End  time.Time
	Took time.Duration
}

// Stalls is what a stall probe saw while it ran.
type Stalls struct {
	// Slow holds the round trips that took longer than the threshold,
	// and the one still waiting when the probe was stopped if it had
	// waited that long.
	Slow []Stall
	// Slowest is the longest any round trip waited for its reply, over
	// the threshold or not.
	Slowest time.Duration
}

// During reports whether one of the slow round trips overlapped from..to.
func (s Stalls) During(from, to time.Time) bool {
	for _, r := range s.Slow {
		if !r.End.Before(from) && r.End.Add(-r.Took).Before(to) {
			return true
		}
	}
	return false
}

// ProbeStalls sends PING through rdb, a client of its own (not one whose
// pool the test keeps busy), one after another 5ms apart, until the
// returned stop is called; stop returns the round trips that took longer
// than over. On a *redis.ClusterClient it probes each primary on its own,
// so that a stall of any node shows. The first PING of each node is sent
// before ProbeStalls returns (a dial is not a stall); if it fails, so does
// the test. Each PING runs without a deadline: it waits as long as Redis
// does.
func ProbeStalls(tb testing.TB, rdb redis.UniversalClient, over time.Duration) (stop func() Stalls) {
	tb.Helper()
	ctx := context.Background()
	var nodes []redis.Cmdable
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			mu.Lock()
			nodes = append(nodes, c)
			mu.Unlock()
			return c.Ping(ctx).Err()
		})
		if err != nil {
			tb.Fatalf("redistest: stall probe: PING each primary: %v", err)
		}
	} else {
		if err := rdb.Ping(ctx).Err(); err != nil {
			tb.Fatalf("redistest: stall probe: PING: %v", err)
		}
		nodes = append(nodes, rdb)
	}
	done := make(chan struct{})
	var mu sync.Mutex
	var seen Stalls
	record := func(end time.Time, took time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		seen.Slowest = max(seen.Slowest, took)
		if took > over {
			seen.Slow = append(seen.Slow, Stall{End: end, Took: took})
		}
	}
	pending := make([]atomic.Int64, len(nodes)) // each node's PING in flight: its start, Unix ns; 0 for none
	var wg sync.WaitGroup
	for i, node := range nodes {
		wg.Go(func() {
			for {
				start := time.Now()
				pending[i].Store(start.UnixNano())
				_ = node.Ping(ctx).Err()
				pending[i].Store(0)
				record(time.Now(), time.Since(start))
				select {
				case <-done:
					return
				case <-time.After(probeInterval):
				}
			}
		})
	}
	return func() Stalls {
		now := time.Now()
		for i := range pending {
			if p := pending[i].Load(); p != 0 && now.Sub(time.Unix(0, p)) > over {
				record(now, now.Sub(time.Unix(0, p)))
			}
		}
		close(done)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return seen
	}
}
