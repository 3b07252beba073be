package cacheaside_test

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/redis/go-redis/v9"
)

// slowAckBudget is the Redis timeout of TestSlowPastTheLimitIsNoOutage.
const slowAckBudget = 250 * time.Millisecond

// TestSlowPastTheLimitIsNoOutage: a primary that holds a write past the
// guard's limit (plus, with WithReplicaAcks, the WAIT timeout) while it
// answers reads promptly fails that write (it is queued), but it is slow,
// not down: the breaker (one failure opens it) stays closed while the
// replay keeps trying, Gets stay Redis hits, and the replay applies the
// write once the primary takes writes again; with WithReplicaAcks as
// without.
func TestSlowPastTheLimitIsNoOutage(t *testing.T) {
	const limit, pause = 500 * time.Millisecond, 2 * time.Second
	for _, tc := range []struct {
		name           string
		acks           bool
		contextTimeout bool
	}{
		{"acks client=ContextTimeoutEnabled", true, true},
		{"acks client=default", true, false},
		{"no acks client=default", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, _ := primaryWithReplica(t)
			rdb := redis.NewClient(&redis.Options{Addr: p.Addr(), ContextTimeoutEnabled: tc.contextTimeout, MaxRetries: -1})
			t.Cleanup(func() { _ = rdb.Close() })
			opts := []cacheaside.Option{
				cacheaside.WithRedisTimeout(slowAckBudget),
				cacheaside.WithFillLock(cacheaside.FillLock{TTL: limit}),
				cacheaside.WithCircuitBreaker(cacheaside.CircuitBreaker{Failures: 1, Cooldown: time.Minute}),
			}
			if tc.acks {
				opts = append(opts, cacheaside.WithReplicaAcks(1, 100*time.Millisecond))
			}
			ld := &faultLoader{}
			c := newFaultCache(t, rdb, ld.load, opts...)
			other := newFaultCache(t, rdb, ld.load, append(opts, cacheaside.WithPrefix("other:"))...)
			ctx := testContext(t)
			if err := c.Set(ctx, 1, "warm"); err != nil {
				t.Fatalf("Set before the pause = %v", err)
			}
			getConcurrently(t, other, faultKeys(100, 109))
			stop := make(chan struct{})
			var readers sync.WaitGroup
			readers.Go(func() {
				for k := 0; ; k++ {
					select {
					case <-stop:
						return
					case <-time.After(5 * time.Millisecond):
					}
					mustGetValue(t, other, 100+k%10, faultValue(100+k%10), "a Get of another key")
				}
			})
			p.CLI(t, "CLIENT", "PAUSE", strconv.FormatInt(pause.Milliseconds(), 10), "WRITE")
			start := time.Now()
			err := c.Set(ctx, 1, "slow")
			t.Logf("Set with the primary holding writes for %v = %v after %v", pause, err, time.Since(start))
			// Gets of the other prefix go on until the pause ends: the
			// replay of the queued write keeps trying meanwhile, and the
			// node must go on answering others.
			time.Sleep(time.Until(start.Add(pause + 200*time.Millisecond)))
			close(stop)
			readers.Wait()
			loads := ld.calls.Load()
			mustGetAll(t, other, faultKeys(100, 109))
			if st := c.Stats(); st.BreakerOpens != 0 || st.Breaker != cacheaside.BreakerClosed {
				t.Errorf("after a write held past the limit while Redis answered reads: breaker %v, opened %d times; want closed, never opened", st.Breaker, st.BreakerOpens)
			}
			if n := ld.calls.Load() - loads; n != 0 {
				t.Errorf("Gets of cached keys after the slow write loaded %d times, want 0 (Redis hits)", n)
			}
			waitFor(t, 10*time.Second, "the replay applies the queued write", func() bool { return c.Stats().InvalidationsPending == 0 })
		})
	}
}
