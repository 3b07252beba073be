package cacheaside_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// roundTrip is one of probeRoundTrips' round trips: when it ended and how
// long it took.
type roundTrip struct {
	end  time.Time
	took time.Duration
}

// probeRoundTrips PINGs through rdb, one PING 5ms after another, until the
// returned function is called; that function returns the round trips that
// took longer than over (and the one still waiting then, if it had). A
// test whose bound a starved process or Redis may overrun fails only what
// happened with no slow round trip around it.
func probeRoundTrips(t *testing.T, rdb redis.UniversalClient, over time.Duration) (stop func() []roundTrip) {
	t.Helper()
	done := make(chan struct{})
	var slow []roundTrip
	var wg sync.WaitGroup
	var mu sync.Mutex
	var pending atomic.Int64 // the start of the PING in flight, Unix ns
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Millisecond):
			}
			start := time.Now()
			pending.Store(start.UnixNano())
			_ = rdb.Ping(context.Background()).Err()
			if took := time.Since(start); took > over {
				mu.Lock()
				slow = append(slow, roundTrip{end: time.Now(), took: took})
				mu.Unlock()
			}
		}
	})
	return func() []roundTrip {
		now := time.Now()
		if took := now.Sub(time.Unix(0, pending.Load())); took > over {
			mu.Lock()
			slow = append(slow, roundTrip{end: now, took: took})
			mu.Unlock()
		}
		close(done)
		wg.Wait()
		return slow
	}
}

// slowTrip reports whether one of trips overlapped from..to.
func slowTrip(trips []roundTrip, from, to time.Time) bool {
	for _, r := range trips {
		if !r.end.Before(from) && r.end.Add(-r.took).Before(to) {
			return true
		}
	}
	return false
}

// longest returns the longest of trips' round trips.
func longest(trips []roundTrip) time.Duration {
	var d time.Duration
	for _, r := range trips {
		d = max(d, r.took)
	}
	return d
}
