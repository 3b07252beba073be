package cacheaside_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/cacheaside/cacheaside/internal/testlog"
	"github.com/redis/go-redis/v9"
)

// slowBudget is the Redis timeout of TestSlowRedisWritesSucceed. The test
// needs Redis to answer the readers within it while it holds the writes;
// with faultBudget (100ms), two test suites at once on two cores once
// starved redis-server that long, and the guard rightly judged a write
// with no reply from its node for a whole budget failed.
const slowBudget = 250 * time.Millisecond

// slowWrite is how long each write of TestSlowRedisWritesSucceed waits in
// Redis: past the Redis timeout, well within go-redis's own.
const slowWrite = slowBudget * 16 / 10

// calmAgain is how long after a slow call the guard runs calls inline
// again (redisguard's calmPeriod is 10 budgets), with a margin.
const calmAgain = slowBudget * 12

// TestSlowRedisWritesSucceed: Redis answers reads promptly while it holds
// every write for 400 ms (CLIENT PAUSE WRITE, as a busy primary does),
// with a Redis timeout of 250 ms. A textbook cache's SET and DEL would
// succeed after 400 ms, so Set, Invalidate, InvalidateTag and Clear (their
// scripts and the L1 message's PUBLISH) must return nil and Redis must hold
// what they wrote: a slow Redis is overload, not an outage. It runs with a
// client that honours context deadlines (a call runs inline under the
// budget and is cut at it) and with the default client (a call is watched
// and waited for while the node answers others). With the first, each
// write waits until the guard runs calls inline again, so that it is cut.
// With WithReplicaAcks (a primary and a replica) the same holds, a SET or
// DEL followed by WAIT being the textbook write, and the replica holds
// what the writes wrote.
func TestSlowRedisWritesSucceed(t *testing.T) {
	for _, tc := range []struct {
		name           string
		contextTimeout bool
		acks           bool
	}{
		{"client=ContextTimeoutEnabled", true, false},
		{"client=default", false, false},
		{"acks client=ContextTimeoutEnabled", true, true},
		{"acks client=default", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t)
			testlog.Attach(t)
			holder := srv // the server whose copies are checked
			opts := []cacheaside.Option{cacheaside.WithRedisTimeout(slowBudget)}
			if tc.acks {
				holder = redistest.StartReplica(t, srv)
				opts = append(opts, cacheaside.WithReplicaAcks(1, time.Second))
			}
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: tc.contextTimeout})
			t.Cleanup(func() { _ = rdb.Close() })
			ld := &faultLoader{}
			c := newFaultCache(t, rdb, ld.load, opts...)
			ctx := testContext(t)
			keys := faultKeys(0, 1)
			// Before the pauses: open connections and load the scripts
			// (a first call is EVALSHA, NOSCRIPT, EVAL).
			mustGetAll(t, c, keys)
			// The readers' cache shares c's guard (same client and
			// settings) but not its prefix, which Clear and InvalidateTag
			// stop serving from Redis until they succeed.
			other := newFaultCache(t, rdb, ld.load, append(opts, cacheaside.WithPrefix("other:"))...)
			getConcurrently(t, other, faultKeys(100, 139))
			if err := c.Set(ctx, 999, "warm"); err != nil {
				t.Fatalf("Set before the pauses = %v", err)
			}
			if err := c.Invalidate(ctx, 999); err != nil {
				t.Fatalf("Invalidate before the pauses = %v", err)
			}
			if err := c.InvalidateTag(ctx, "warm"); err != nil {
				t.Fatalf("InvalidateTag before the pauses = %v", err)
			}
			// Gets of cached keys of the other prefix: Redis answers them,
			// promptly, all along, on the node c's writes go to.
			stop := make(chan struct{})
			var readers sync.WaitGroup
			for r := range 4 {
				readers.Go(func() {
					for k := r; ; k += 4 {
						select {
						case <-stop:
							return
						default:
						}
						mustGetValue(t, other, 100+k%40, faultValue(100+k%40), "a Get of another key")
					}
				})
			}
			defer func() {
				close(stop)
				readers.Wait()
			}()
			// A probe on a connection of its own reads Redis during each
			// write. When it waited a whole Redis timeout for a reply,
			// Redis (or this machine: at a load average of 17-22 two
			// suites at once starve redis-server or the readers'
			// goroutines) answered nothing for that long, which is a
			// failed Redis by WithRedisTimeout's definition: a textbook
			// client with the same timeout fails then too. The guard
			// rightly judges the write's node silent, so an error of that
			// write is logged, not failed.
			probe := redis.NewClient(&redis.Options{Addr: srv.Addr()})
			t.Cleanup(func() { _ = probe.Close() })
			var stalled bool // a probe waited a Redis timeout during some write
			slowly := func(what string, write func(context.Context) error) (ok bool) {
				t.Helper()
				if tc.contextTimeout {
					// Until the guard forgets the last slow call, calls
					// run watched, not inline: each write is to be cut.
					time.Sleep(calmAgain)
				}
				srv.CLI(t, "CLIENT", "PAUSE", strconv.FormatInt(slowWrite.Milliseconds(), 10), "WRITE")
				stop := redistest.ProbeStalls(t, probe, slowBudget)
				err := write(ctx)
				stall := stop().Slowest
				switch {
				case err != nil && stall >= slowBudget:
					stalled = true
					t.Logf("%s with Redis holding writes for %v = %v: a probe on its own connection waited %v for a reply, a Redis timeout or more (Redis or this machine stalled; load average %s)", what, slowWrite, err, stall, loadAverage())
					return false
				case err != nil:
					t.Errorf("%s with Redis holding writes for %v = %v, want nil (slowest probe reply %v)", what, slowWrite, err, stall)
					return false
				}
				return true
			}
			for _, k := range keys {
				want := "set-" + strconv.Itoa(k)
				if !slowly("Set("+strconv.Itoa(k)+")", func(ctx context.Context) error { return c.Set(ctx, k, want) }) {
					continue
				}
				if v, ok := storedValue[string](t, holder, valueKey(strconv.Itoa(k))); !ok || v != want {
					t.Errorf("Redis holds %q, %v after Set(%d), want %q", v, ok, k, want)
				}
			}
			for _, k := range keys {
				if !slowly("Invalidate("+strconv.Itoa(k)+")", func(ctx context.Context) error { return c.Invalidate(ctx, k) }) {
					continue
				}
				if holder.CLI(t, "EXISTS", valueKey(strconv.Itoa(k))) != "0" {
					t.Errorf("Redis still holds key %d after its Invalidate", k)
				}
			}
			slowly("InvalidateTag", func(ctx context.Context) error { return c.InvalidateTag(ctx, "t") })
			slowly("Clear", func(ctx context.Context) error { return c.Clear(ctx) })
			s := c.Stats()
			t.Logf("with Redis holding writes: %d keys queued, %d calls slow", s.InvalidationsQueued, s.RedisSlow)
			if (s.InvalidationsQueued != 0 || s.InvalidationsPending != 0) && !stalled {
				t.Errorf("Stats() = queued %d, pending %d; want 0 and 0 (no write failed)", s.InvalidationsQueued, s.InvalidationsPending)
			}
		})
	}
}

// loadAverage returns the machine's load averages, for the log.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}
