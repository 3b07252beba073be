package cacheaside_test

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/integration/faultproxy"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// An Invalidate or Set that a partition kept from Redis is queued and
// replayed once the partition heals (the root module's replay_test.go has
// the same through SIGSTOP and a kill -9 with persistence), and a Redis
// that is slow but answers queues nothing.

// TestChangeDuringPartitionIsReplayed: instance A reaches Redis through a
// proxy that swallows every byte (a partition: the call never reaches
// Redis), B directly. A changes key 1 with Invalidate or Set, which fails
// and is queued; once the partition heals, A's first Get and every Get on
// B a second later return the new row.
func TestChangeDuringPartitionIsReplayed(t *testing.T) {
	for _, ch := range faultChanges {
		t.Run(ch.name, func(t *testing.T) {
			srv := redistest.Start(t)
			px := faultproxy.New(t, srv.Addr())
			db := newVersionedDB()
			opt := cacheaside.WithRedisTimeout(faultBudget)
			a := newCacheOn(t, newFaultClient(t, px.Addr()), db.load, opt)
			b := newCacheOn(t, newFaultClient(t, srv.Addr()), db.load, opt)
			checkChangeSurvivesFault(t, a, b, db, ch, func() {
				px.Blackhole(t)
				t.Cleanup(func() { px.Reset(t) }) // before the caches close, should the test fail
			}, func() { px.Reset(t) })
		})
	}
}

// TestSlowRedisQueueStaysSmall: with replies late by 10 ms to 110 ms and
// a Redis timeout of 100 ms, Redis answers every call, some of them past
// the budget, while it answers others (Gets of other keys keep going).
// The guard waits for such slow calls, so most writes succeed as the
// textbook cache's DEL and SET would; when it does judge the node silent
// (redisguard's life.go: no reply at all for a budget, which a loaded
// machine can produce here) the write fails as before this queue existed,
// and is queued. Every Get must return its row; every write error must
// match ErrRedisUnavailable; nothing may be dropped; the guard must count
// slow calls while the latency lasts (it waited for calls past the budget);
// and once the latency is gone the queue must drain within a second.
//
// Silence can open the breaker the moment the latency begins: the first
// few calls start together, some on connections dialed then (HELLO and
// CLIENT SETINFO first: three round trips), and on a loaded machine none
// of them may be answered within the budget, which makes five silent
// calls, the default breaker's failures, at once (at a load of 10 to 20,
// 101 of 149 calls begun in the latency's first 20 ms took over 110 ms, up
// to 556 ms; of those begun later, 4%). The writes are then skipped and
// all 40 may end within the breaker's cooldown, with no call of the
// latency slow: "40 of 40 writes failed, 40 keys queued; 0 calls slow".
// So the writers go on past their 40 writes, up to waitLimit, until a call
// of the latency was slow: the breaker must close again and the guard
// wait for slow calls, or a slow Redis has become an outage.
func TestSlowRedisQueueStaysSmall(t *testing.T) {
	srv := redistest.Start(t)
	px := faultproxy.New(t, srv.Addr())
	ld := &faultLoader{}
	rdb := newFaultClient(t, px.Addr())
	c := newCacheOn(t, rdb, ld.load, cacheaside.WithRedisTimeout(faultBudget))
	keys := faultKeys(0, 19)
	for _, k := range keys {
		mustGetValue(t, c, k, faultValue(k), "before the latency")
	}
	// Opens the pool's connections: a dial through the latency takes
	// several round trips (HELLO, CLIENT SETINFO), past the budget.
	getConcurrently(t, c, faultKeys(200, 239))
	// And those of pipelines (the cache's scripts and batched reads), which
	// go-redis keeps in a pool of their own (Options.PipelinePoolSize, 10)
	// that it does not fill ahead: the Gets above open one, and the first
	// calls of the latency dialed 3 more.
	openPipelineConns(t, rdb, 10)
	// Loads the write script: a first call is two round trips (EVALSHA,
	// NOSCRIPT, EVAL). This is the setup, not the test: on a loaded
	// machine the calls above can run past the budget and open the
	// breaker (two test suites at once: "Set before the latency = ...
	// skipped: circuit open"), so try again until both succeed, and start
	// from an empty queue.
	waitFor(t, waitLimit, "a Set and an Invalidate before the latency", func() bool {
		if c.Set(testContext(t), 999, faultValue(999)) != nil {
			time.Sleep(50 * time.Millisecond)
			return false
		}
		return c.Invalidate(testContext(t), 999) == nil
	})
	waitFor(t, waitLimit, "no write queued before the latency", func() bool { return c.Stats().InvalidationsPending == 0 })

	before := c.Stats()
	px.AddLatency(t, faultBudget*6/10, faultBudget/2)
	t.Cleanup(func() { px.Reset(t) })
	ctx := testContext(t)
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for r := range 8 {
		readers.Go(func() {
			for k := 100 + r; ; k += 8 {
				select {
				case <-stop:
					return
				default:
				}
				mustGetValue(t, c, k%100+100, faultValue(k%100+100), "a Get of another key")
			}
		})
	}
	var writes, failed atomic.Int64
	var wg sync.WaitGroup
	noSlowYet := func() bool { return c.Stats().RedisSlow == before.RedisSlow }
	deadline := time.Now().Add(waitLimit)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; i < 10 || (noSlowYet() && time.Now().Before(deadline)); i++ {
				k := keys[(w*10+i)%len(keys)]
				var err error
				if i%2 == 0 {
					err = c.Invalidate(ctx, k)
				} else {
					err = c.Set(ctx, k, faultValue(k))
				}
				writes.Add(1)
				if err != nil {
					failed.Add(1)
					// Queued, or written but not published to the other
					// processes' L1 (which this queue does not cover).
					if !errors.Is(err, cacheaside.ErrRedisUnavailable) {
						t.Errorf("write %d of worker %d (key %d) with a slow Redis = %v, want nil or an error matching ErrRedisUnavailable", i, w, k, err)
					}
					if i >= 10 {
						time.Sleep(faultBudget / 10) // skipped at once while the breaker is open
					}
				}
				mustGetValue(t, c, k, faultValue(k), "a Get after a write with a slow Redis")
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	s := c.Stats()
	t.Logf("with a slow Redis: %d of %d writes failed, %d keys queued; %d calls slow, %d breaker opens", failed.Load(), writes.Load(), s.InvalidationsQueued-before.InvalidationsQueued, s.RedisSlow-before.RedisSlow, s.BreakerOpens-before.BreakerOpens)
	if s.RedisSlow == before.RedisSlow {
		t.Errorf("Stats().RedisSlow = %d, as before the latency, %v after it began; want calls past the budget (the test checked nothing, or the breaker never closed)", s.RedisSlow, waitLimit)
	}
	if s.InvalidationsDropped != 0 || s.InvalidationsPending > uint64(len(keys)) {
		t.Errorf("Stats() = dropped %d, pending %d; want 0 dropped, at most one pending per key written (%d)", s.InvalidationsDropped, s.InvalidationsPending, len(keys))
	}
	px.Reset(t)
	waitFor(t, time.Second+faultSlack, "the queue drains once Redis is fast again", func() bool {
		return c.Stats().InvalidationsPending == 0
	})
}

// openPipelineConns has rdb open n connections for pipelines, from n
// pipelines at once that each hold theirs for a blocking read of 50 ms.
func openPipelineConns(t *testing.T, rdb *redis.Client, n int) {
	t.Helper()
	ctx := testContext(t)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				return p.Do(ctx, "blpop", "test:nothing", "0.05").Err()
			})
			if !errors.Is(err, redis.Nil) {
				t.Errorf("a pipelined BLPOP of an empty list = %v, want redis.Nil", err)
			}
		})
	}
	wg.Wait()
}
