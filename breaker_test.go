package cacheaside_test

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestOpenBreakerSkipsNetwork proves that while the breaker is open a Get
// sends nothing to Redis and dials nothing: a hook on the client counts
// every command and every dial made for a Get.
func TestOpenBreakerSkipsNetwork(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	var wire netCounter
	rdb.AddHook(&wire)
	ld := &faultLoader{}
	c := newFaultCache(t, rdb, ld.load,
		cacheaside.WithRedisTimeout(faultBudget),
		cacheaside.WithBreaker(3, 10*time.Second)) // stays open for the whole test
	keys := faultKeys(0, 9)
	mustGetAll(t, c, keys)

	srv.Kill()
	waitFor(t, 5*time.Second, "failed Gets open the breaker", func() bool {
		mustGet(t, c, 0)
		return c.Stats().Breaker == cacheaside.BreakerOpen
	})
	// Calls abandoned before the breaker opened go on retrying in go-redis
	// until its own timeouts end them; wait for them before measuring.
	waitFor(t, 20*time.Second, "calls abandoned before the breaker opened end", func() bool {
		return wire.running.Load() == 0
	})
	before := c.Stats()
	commands, dials := wire.commands.Load(), wire.markedDial.Load()

	storm := startGetStorm(c, 4, len(keys))
	time.Sleep(500 * time.Millisecond)
	storm.halt(t, faultBudget+faultSlack)
	// A Get that touched Redis would wait the Redis timeout, for go-redis
	// retries a refused dial with backoff.
	took := make([]time.Duration, 51)
	for i := range took {
		took[i] = mustGet(t, c, i%len(keys))
	}
	slices.Sort(took)
	if median := took[len(took)/2]; median > faultBudget/10 {
		t.Errorf("median Get with the breaker open took %v, want under %v, far below the Redis timeout (%v)", median, faultBudget/10, faultBudget)
	}

	after := c.Stats()
	if n := wire.commands.Load() - commands; n != 0 {
		t.Errorf("with the breaker open, %d Gets sent %d commands to Redis, want 0", storm.gets.Load(), n)
	}
	if n := wire.markedDial.Load() - dials; n != 0 {
		t.Errorf("with the breaker open, %d Gets dialed Redis %d times, want 0", storm.gets.Load(), n)
	}
	if after.Breaker != cacheaside.BreakerOpen {
		t.Errorf("Stats().Breaker = %q within the cooldown, want %q", after.Breaker, cacheaside.BreakerOpen)
	}
	if after.RedisSkipped <= before.RedisSkipped || after.Loads <= before.Loads {
		t.Errorf("Stats() went from %+v to %+v, want RedisSkipped and Loads to grow", before, after)
	}
	recoverServer(t, srv, rdb)
}

// TestOOMReplyDoesNotOpenBreaker fills a server with maxmemory and no
// eviction until writes fail with OOM. An OOM reply comes from a live
// server: reads must keep hitting and the breaker must stay closed, while
// Gets of keys that cannot be stored still return the loader's value.
func TestOOMReplyDoesNotOpenBreaker(t *testing.T) {
	// An empty Redis 7 with a few clients and its Lua engine already uses
	// about 1 MiB.
	srv := redistest.Start(t, "--maxmemory", "2mb", "--maxmemory-policy", "noeviction")
	rdb := srv.Client(t)
	ld := &faultLoader{}
	c := newFaultCache(t, rdb, ld.load,
		cacheaside.WithRedisTimeout(faultBudget),
		cacheaside.WithBreaker(3, 10*time.Second),
		cacheaside.WithPrefix("oom:"))
	hot := faultKeys(0, 9)
	mustGetAll(t, c, hot)
	if n := existing(t, srv, "oom:", hot); n != len(hot) {
		t.Fatalf("%d of %d keys stored before the server was full, want all", n, len(hot))
	}
	fillUntilOOM(t, srv, rdb)

	cold := faultKeys(100, 119)
	before := c.Stats()
	for range 3 {
		mustGetAll(t, c, cold)
	}
	mustGetAll(t, c, hot)
	after := c.Stats()
	if after.BreakerOpens != 0 || after.Breaker != cacheaside.BreakerClosed {
		t.Errorf("Stats().BreakerOpens, Breaker = %d, %q after OOM replies, want 0, %q", after.BreakerOpens, after.Breaker, cacheaside.BreakerClosed)
	}
	// Every Get of a cold key loads once. A Get of a stored key hits,
	// unless its read was cut at the Redis timeout (the machine stalled
	// this process for faultBudget: seen at a load average of 17 with
	// -race), which makes it a load: that is a Redis error, not an OOM.
	hits := after.Hits - before.Hits
	extra := int64(after.Loads-before.Loads) - int64(3*len(cold))
	if extra < 0 || extra != int64(len(hot))-int64(hits) {
		t.Errorf("%d Gets of keys that cannot be stored and %d of stored keys made %d loads and %d hits, want one load per Get of a new key and a hit or a load per stored key",
			3*len(cold), len(hot), after.Loads-before.Loads, hits)
	}
	if extra > 2 {
		t.Errorf("Gets of %d stored keys on a full server made %d hits, want %d (at most 2 reads cut by a stalled machine)", len(hot), hits, len(hot))
	}
	if after.RedisErrors-before.RedisErrors < uint64(3*len(cold)) {
		t.Errorf("Stats().RedisErrors grew by %d, want at least one OOM reply per Get of a new key", after.RedisErrors-before.RedisErrors)
	}
	if n := existing(t, srv, "oom:", cold); n != 0 {
		t.Errorf("%d new keys stored on a full server, want 0", n)
	}
}

// fillUntilOOM writes junk until the server refuses a write with OOM. Then
// it lowers maxmemory well below the memory in use: a refused write frees
// its query buffer, and Redis shrinks idle buffers, so a server filled just
// to its limit would soon accept small writes again.
func fillUntilOOM(t *testing.T, srv *redistest.Server, rdb *redis.Client) {
	t.Helper()
	ctx := context.Background()
	junk := strings.Repeat("x", 16<<10)
	for i := 0; ; i++ {
		err := rdb.Set(ctx, "junk:"+strconv.Itoa(i), junk, 0).Err()
		if redis.IsOOMError(err) {
			break
		}
		if err != nil || i == 1000 {
			t.Fatalf("SET junk:%d = %v, want the server to fill up with OOM", i, err)
		}
	}
	info := srv.CLI(t, "INFO", "memory")
	_, rest, _ := strings.Cut(info, "used_memory:")
	total, err := strconv.ParseInt(strings.TrimSpace(rest[:strings.IndexByte(rest, '\n')]), 10, 64)
	if err != nil {
		t.Fatalf("used_memory in INFO memory: %v", err)
	}
	srv.CLI(t, "CONFIG", "SET", "maxmemory", strconv.FormatInt(total-256<<10, 10))
	if err := rdb.Set(ctx, "probe", "x", 0).Err(); !redis.IsOOMError(err) {
		t.Fatalf("SET probe on a full server = %v, want an OOM reply", err)
	}
}

// TestFrozenRedisContextTimeoutClient is the frozen-server test with a
// client that honours context deadlines: the guard then bounds each call
// on the caller's goroutine, and abandons none while this process is not
// congested. A busy process (more runnable goroutines than it runs, as
// under two suites at once) sends calls to goroutines of their own
// (redisguard's inline.go), which a freeze abandons, each ended by its
// context deadline (the Close of newFaultCache waits for them).
func TestFrozenRedisContextTimeoutClient(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = rdb.Close() })
	var thaw func()
	c, _ := survivesFault(t, rdb, nil, "Redis frozen",
		func() { thaw = freezeServer(t, srv) }, func() { thaw() })
	s := c.Stats()
	if s.RedisErrors == 0 {
		t.Errorf("Stats() = %+v, want Redis errors with Redis frozen", s)
	}
	if s.Abandoned > 0 {
		t.Logf("%d calls abandoned: the process was congested, so calls ran on goroutines of their own", s.Abandoned)
	}
}

// TestMaxAbandonedBoundsStuckCalls freezes Redis under waves of concurrent
// Gets of distinct keys, with the breaker disabled so that only
// WithMaxAbandoned stands between the Gets and the pool: at most that many
// calls may be left running past the Redis timeout at once. (The Gets of
// one wave share one call, their node's batched read; each wave makes a
// new call once the last one was abandoned.)
func TestMaxAbandonedBoundsStuckCalls(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ld := &faultLoader{}
	const maxAbandoned = 4
	c := newFaultCache(t, rdb, ld.load,
		cacheaside.WithRedisTimeout(faultBudget),
		cacheaside.WithBreaker(0, 0),
		cacheaside.WithMaxAbandoned(maxAbandoned), cacheaside.WithTimeoutClone(false))
	mustGet(t, c, -1) // connect

	thaw := freezeServer(t, srv)
	for wave := range 8 {
		getConcurrently(t, c, faultKeys(5*wave, 5*wave+4))
	}
	// Frozen calls end only at the client's read timeout (seconds), so every
	// call abandoned so far is still running.
	s := c.Stats()
	thaw()
	if s.Abandoned > maxAbandoned {
		t.Errorf("8 waves of 5 concurrent Gets on a frozen Redis left %d calls running past the Redis timeout, want at most %d (WithMaxAbandoned)",
			s.Abandoned, maxAbandoned)
	}
	if s.RedisSkipped == 0 {
		t.Errorf("Stats().RedisSkipped = 0, want calls refused once %d were abandoned", maxAbandoned)
	}
}

// TestBreakerHookSeesChanges: the hook of WithBreakerHook is told when the
// breaker opens after Redis dies and when it closes again after Redis is
// back; a panicking hook does not break Gets.
func TestBreakerHookSeesChanges(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	var log changeLog
	seen := func(to cacheaside.BreakerState) bool {
		return slices.ContainsFunc(log.all(), func(ch cacheaside.BreakerChange) bool { return ch.To == to })
	}
	ld := &faultLoader{}
	c := newFaultCache(t, rdb, ld.load,
		cacheaside.WithRedisTimeout(faultBudget),
		cacheaside.WithBreaker(3, 100*time.Millisecond),
		cacheaside.WithBreakerHook(func(ch cacheaside.BreakerChange) {
			log.hook(ch)
			panic("a careless hook")
		}))
	mustGetAll(t, c, faultKeys(0, 9))
	srv.Kill()
	waitFor(t, 5*time.Second, "the hook sees the breaker open", func() bool {
		mustGet(t, c, 0)
		return seen(cacheaside.BreakerOpen)
	})
	recoverServer(t, srv, rdb)
	waitFor(t, 10*time.Second, "the hook sees the breaker close", func() bool {
		mustGet(t, c, 0)
		return seen(cacheaside.BreakerClosed)
	})
	first := log.all()[0]
	if first.From != cacheaside.BreakerClosed || first.To != cacheaside.BreakerOpen || first.Node != "" {
		t.Errorf("first change = %+v, want closed → open on node \"\"", first)
	}
	if got := c.Stats().BreakerOpens; got < 1 {
		t.Errorf("Stats().BreakerOpens = %d, want at least 1", got)
	}
}

// TestFrozenRedisUnderHitStormOpensBreaker: workers hit Redis when it
// freezes, so that many calls admitted before the freeze fail at once.
// The breaker must open, each change the hook sees must follow the one
// before (closed → open → half-open → open or closed), and after the thaw
// it must close again with hits going to Redis and none skipped.
func TestFrozenRedisUnderHitStormOpensBreaker(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	var log changeLog
	last := func() cacheaside.BreakerState {
		if all := log.all(); len(all) > 0 {
			return all[len(all)-1].To
		}
		return cacheaside.BreakerClosed
	}
	ld := &faultLoader{}
	c := newFaultCache(t, rdb, ld.load,
		cacheaside.WithRedisTimeout(faultBudget),
		cacheaside.WithBreaker(5, 300*time.Millisecond),
		cacheaside.WithBreakerHook(log.hook))
	keys := faultKeys(0, 19)
	mustGetAll(t, c, keys)

	storm := startGetStorm(c, 8, len(keys))
	time.Sleep(300 * time.Millisecond)
	thaw := freezeServer(t, srv)
	waitFor(t, 10*time.Second, "the breaker opens on the frozen server", func() bool {
		return c.Stats().BreakerOpens >= 1
	})
	time.Sleep(time.Second) // half-open probes fail on the frozen server
	thaw()
	waitFor(t, 20*time.Second, "the breaker closes after the thaw", func() bool {
		return last() == cacheaside.BreakerClosed && c.Stats().Breaker == cacheaside.BreakerClosed
	})
	storm.halt(t, 0)

	before := c.Stats()
	mustGetAll(t, c, keys)
	mustGetAll(t, c, keys)
	after := c.Stats()
	if after.RedisSkipped != before.RedisSkipped || after.Breaker != cacheaside.BreakerClosed {
		t.Errorf("Stats() after the breaker closed went from %+v to %+v over %d Gets, want none skipped, closed", before, after, 2*len(keys))
	}

	changes := log.all()
	next := map[cacheaside.BreakerState][]cacheaside.BreakerState{
		cacheaside.BreakerClosed:   {cacheaside.BreakerOpen},
		cacheaside.BreakerOpen:     {cacheaside.BreakerHalfOpen},
		cacheaside.BreakerHalfOpen: {cacheaside.BreakerOpen, cacheaside.BreakerClosed},
	}
	from, opens := cacheaside.BreakerClosed, 0
	for i, ch := range changes {
		ok := ch.From == from
		if ok {
			ok = false
			for _, to := range next[from] {
				ok = ok || ch.To == to
			}
		}
		if !ok {
			t.Errorf("change %d = %+v after %v, want from %v to one of %v (all: %+v)", i, ch, from, from, next[from], changes)
			break
		}
		if ch.To == cacheaside.BreakerOpen {
			opens++
		}
		from = ch.To
	}
	if got := c.Stats().BreakerOpens; got != uint64(opens) || opens < 1 {
		t.Errorf("Stats().BreakerOpens = %d, hook saw %d opens, want equal and at least 1", got, opens)
	}
	t.Logf("changes: %d, opens %d, stats %+v", len(changes), opens, after)
}

// changeLog records the changes a WithBreakerHook hook is told of.
type changeLog struct {
	mu      sync.Mutex
	changes []cacheaside.BreakerChange
}

func (l *changeLog) hook(ch cacheaside.BreakerChange) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changes = append(l.changes, ch)
}

// all returns the changes recorded so far.
func (l *changeLog) all() []cacheaside.BreakerChange {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.changes)
}
