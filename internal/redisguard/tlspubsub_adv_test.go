package redisguard

import (
	"context"
	"crypto/tls"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestFrozenTLSNodeWithPubSubOpens: a frozen TLS node while a pub/sub
// connection of the same client reads (rdb.Subscribe, its Channel
// draining) and concurrent callers call: the pub/sub connection always
// has a read going on (busy), so a byte in it would count as a reply
// waiting. The breaker must open within 2 s.
func TestFrozenTLSNodeWithPubSubOpens(t *testing.T) {
	for _, inline := range []bool{false, true} {
		t.Run(fmt.Sprintf("inline=%v", inline), func(t *testing.T) {
			srv, addr := startTLS(t)
			rdb := redis.NewClient(&redis.Options{Addr: addr, TLSConfig: &tls.Config{InsecureSkipVerify: true}, ContextTimeoutEnabled: inline, PoolSize: 4, ReadTimeout: 10 * time.Second})
			t.Cleanup(func() { _ = rdb.Close() })
			g := New(Config{Client: rdb, Inline: inline, Budget: 40 * time.Millisecond, Limit: 5 * time.Second, MaxAbandoned: 64, BreakerFailures: 5, BreakerCooldown: time.Minute})
			t.Cleanup(g.Close)
			ctx := context.Background()
			growPool(t, rdb, 4)
			ps := rdb.Subscribe(ctx, "ch")
			t.Cleanup(func() { _ = ps.Close() })
			if _, err := ps.Receive(ctx); err != nil {
				t.Fatal(err)
			}
			ch := ps.Channel()
			go func() {
				for range ch {
				}
			}()
			// Messages arrive on the pub/sub connection up to the freeze.
			stopPub := make(chan struct{})
			var pw sync.WaitGroup
			pw.Go(func() {
				pub := redis.NewClient(&redis.Options{Addr: addr, TLSConfig: &tls.Config{InsecureSkipVerify: true}, MaxRetries: -1, ReadTimeout: 100 * time.Millisecond})
				defer pub.Close()
				for {
					select {
					case <-stopPub:
						return
					default:
					}
					_ = pub.Publish(ctx, "ch", "m").Err()
					time.Sleep(time.Millisecond)
				}
			})
			pingFor(t, g, rdb, time.Second)
			srv.Freeze()
			defer srv.Thaw()
			close(stopPub)
			start := time.Now()
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Go(func() {
					time.Sleep(time.Duration(i) * 5 * time.Millisecond)
					for time.Since(start) < 5*time.Second && g.State() != Open {
						_ = g.Do(ctx, "k", func(ctx context.Context) error { return rdb.Ping(ctx).Err() })
					}
				})
			}
			wg.Wait()
			pw.Wait()
			took := time.Since(start)
			t.Logf("took %v state %v counts %+v pool %+v", took, g.State(), g.Counts(), rdb.PoolStats())
			if g.State() != Open || took > 2*time.Second {
				t.Errorf("breaker %v after %v against a frozen TLS node with pub/sub, want Open within 2s", g.State(), took)
			}
		})
	}
}
