package redisguard

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestFrozenNodeConcurrentInlineCallersOpen: concurrent inline calls
// (ContextTimeoutEnabled, go-redis's default MaxRetries), callers
// staggered, to a node that freezes, with a small pool. The breaker must
// open within a second. It failed with PoolSize 1 and 16 callers (2.5 to
// 3.2 s, about a thousand calls judged ErrSlow, 3 runs of 3): each call
// waited ~33 ms for the pool's one connection, held by the previous call
// to the frozen node, then wrote and was cut ~7 ms later; go-redis's retry
// backoff returns context.DeadlineExceeded, and cutUnsent found no request
// unanswered for half the budget (each close had waited ~7 ms), so it
// excused the call as not sent. The node's silence is now counted across
// closes since its latest reply (conns.silentFrom). With load (one P, two
// spinning goroutines beside 16 callers) the process is busy (life.go:
// more than busyQueue goroutines ready per P), and silence is not judged
// while it is, by design: then the breaker must still open, within the
// limit plus slack.
func TestFrozenNodeConcurrentInlineCallersOpen(t *testing.T) {
	for _, pool := range []int{1, 4} {
		for _, callers := range []int{4, 16} {
			for _, load := range []bool{false, true} {
				t.Run(fmt.Sprintf("pool=%d/callers=%d/load=%v", pool, callers, load), func(t *testing.T) {
					srv := redistest.Start(t)
					rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true, PoolSize: pool, ReadTimeout: 10 * time.Second})
					t.Cleanup(func() { _ = rdb.Close() })
					g := New(Config{Client: rdb, Inline: true, Budget: 40 * time.Millisecond, Limit: 5 * time.Second, MaxAbandoned: 64,
						BreakerFailures: 5, BreakerCooldown: time.Minute})
					t.Cleanup(g.Close)
					ctx := context.Background()
					if err := g.Do(ctx, "k", func(ctx context.Context) error { return rdb.Ping(ctx).Err() }); err != nil {
						t.Fatal(err)
					}
					growPool(t, rdb, pool)
					if load {
						defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
						defer spin(2)()
					}
					srv.Freeze()
					defer srv.Thaw()
					start := time.Now()
					var wg sync.WaitGroup
					var mu sync.Mutex
					kinds := map[string]int{}
					for i := range callers {
						wg.Go(func() {
							time.Sleep(time.Duration(i) * 7 * time.Millisecond) // staggered: short-waited cuts interleave with long ones
							for time.Since(start) < 8*time.Second && g.State() != Open {
								err := g.Do(ctx, "k", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
								k := "ok"
								switch {
								case IsOutage(err):
									k = "outage"
								case err != nil:
									k = fmt.Sprintf("%T", err)
									if len(err.Error()) < 80 {
										k += ":" + err.Error()
									}
								}
								mu.Lock()
								kinds[k]++
								mu.Unlock()
							}
						})
					}
					wg.Wait()
					took := time.Since(start)
					t.Logf("took %v state %v counts %+v errors %v", took, g.State(), g.Counts(), kinds)
					within := time.Second
					if load {
						within = 8 * time.Second // busy: judged at the limit (5 s) at worst
					}
					if g.State() != Open || took > within {
						t.Errorf("breaker %v after %v against a frozen node, want Open within %v", g.State(), took, within)
					}
				})
			}
		}
	}
}
