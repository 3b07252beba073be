package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/redis/go-redis/v9"
)

// The expiry avalanche of issue 11: warm keys all expire within
// avalancheSpread while avalancheInstances instances, each with a client
// of its own on go-redis defaults, serve avalancheRate Gets per second
// between them over a database of avalancheConns connections that takes
// avalancheQuery per query. The Gets arrive on schedule (an open loop),
// whether or not earlier ones have returned, as requests to a service do.
const (
	avalancheInstances = 4
	avalancheRate      = 2000 // Gets per second over all instances
	avalancheConns     = 16
	avalancheQuery     = 20 * time.Millisecond
	avalancheSpread    = time.Second
	loadWindow         = 250 * time.Millisecond
	// avalancheDeadline bounds each Get only so that a broken run ends; a
	// Get that reaches it counts as an error.
	avalancheDeadline = time.Minute
)

// nameCacheasideDefaults is cacheaside as New makes it with no options;
// nameCacheasidePatient is the same with a Redis budget as long as
// go-redis's own read timeout and no breaker, which leaves the load side
// alone: it shows what the Redis guard's budget and breaker cost when a
// busy machine answers Redis calls late.
const (
	nameCacheasideDefaults = "cacheaside (default options)"
	nameCacheasidePatient  = "cacheaside (defaults but WithRedisTimeout(3s), WithBreaker(0, 0))"
)

// avalancheKind is a strategy in the avalanche, and where it keeps the
// value of a key in Redis, so that the run can make the keys expire.
type avalancheKind struct {
	kind
	key func(id int64) string
}

// avalancheKinds are the textbook cache, go-redis/cache and cacheaside
// (its key layout is the documented one: "ca:{<id>}").
func avalancheKinds() []avalancheKind {
	prefixed := func(id int64) string { return "p:" + strconv.FormatInt(id, 10) }
	var out []avalancheKind
	for _, k := range kinds {
		if k.name == nameTextbook || k.name == nameGoCache {
			out = append(out, avalancheKind{k, prefixed})
		}
	}
	cacheasideWith := func(name string, opts ...cacheaside.Option) avalancheKind {
		return avalancheKind{
			kind: kind{name, func(rdb *redis.Client, db *database, _ string) (strategy, error) {
				c, err := cacheaside.New(rdb, db.load, opts...)
				if err != nil {
					return nil, err
				}
				return &ca{c: c}, nil
			}},
			key: func(id int64) string { return "ca:{" + strconv.FormatInt(id, 10) + "}" },
		}
	}
	return append(out, cacheasideWith(nameCacheasideDefaults),
		cacheasideWith(nameCacheasidePatient, cacheaside.WithRedisTimeout(3*time.Second), cacheaside.WithCircuitBreaker(cacheaside.CircuitBreaker{Failures: -1})))
}

type avalancheResult struct {
	name              string
	gets, errs        int64
	lat               []time.Duration // sorted
	loads, cancelled  int64           // database calls, and those cut off by their context
	perWindow         []int64         // database calls started in each loadWindow
	took              time.Duration   // from the first expiry to the last answer
	breakerOpens      int64           // -1: the strategy has no breaker
	redisErrs         int64           // -1: not counted
	lockWaitTimeouts  int64
	loadErrs, loaders int64            // cacheaside's own load counters
	redisCmds         map[string]int64 // commands the server ran during the run
}

// commands sums redisCmds.
func (r avalancheResult) commands() int64 {
	var n int64
	for _, c := range r.redisCmds {
		n += c
	}
	return n
}

// maxWindow and meanWindow are the most and the mean database calls
// started per loadWindow, from the first expiry to the last answer.
func (r avalancheResult) maxWindow() int64 {
	if len(r.perWindow) == 0 {
		return 0
	}
	return slices.Max(r.perWindow)
}

func (r avalancheResult) meanWindow() float64 {
	n := max(1, int64((r.took+loadWindow-1)/loadWindow))
	return float64(r.loads) / float64(n)
}

// measureAvalanche runs the avalanche once per strategy, each on a
// redis-server of its own.
func (e *env) measureAvalanche(ctx context.Context) ([]avalancheResult, error) {
	var res []avalancheResult
	for _, k := range avalancheKinds() {
		r, err := e.avalancheTrial(ctx, k)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k.name, err)
		}
		e.progress("avalanche %-30s %d Gets, %d errors, %d loads (max %d per %s), p99 %s, breaker opened %d×; Redis ran %v",
			k.name, r.gets, r.errs, r.loads, r.maxWindow(), loadWindow, dur(pct(r.lat, 0.99)), r.breakerOpens, r.redisCmds)
		res = append(res, r)
	}
	return res, nil
}

func (e *env) avalancheTrial(ctx context.Context, k avalancheKind) (avalancheResult, error) {
	res := avalancheResult{name: k.name, breakerOpens: -1, redisErrs: -1}
	srv, err := startServer(ctx)
	if err != nil {
		return res, err
	}
	defer srv.close()
	admin := redis.NewClient(&redis.Options{Addr: srv.addr()})
	defer admin.Close()
	db := &database{conns: make(chan struct{}, avalancheConns), starts: &windows{width: loadWindow}}
	insts := make([]strategy, avalancheInstances)
	for i := range insts {
		rdb := redis.NewClient(&redis.Options{Addr: srv.addr()})
		defer rdb.Close()
		if insts[i], err = k.open(rdb, db, "p:"); err != nil {
			return res, err
		}
		defer insts[i].close()
	}
	ids := make([]int64, e.cfg.avalancheKeys)
	for i := range ids {
		ids[i] = int64(i)
	}
	if err := warmUntilStored(ctx, insts[0], admin, k.key, ids); err != nil { // with a database that answers at once
		return res, err
	}
	db.delay.Store(int64(avalancheQuery))
	calls0, cancelled0 := db.calls.Load(), db.cancelled.Load()
	before := make([]cacheaside.Stats, len(insts))
	for i, s := range insts {
		if c, ok := s.(*ca); ok {
			before[i] = c.c.Stats()
		}
	}

	if err := admin.ConfigResetStat(ctx).Err(); err != nil {
		return res, err
	}
	start := time.Now()
	db.starts.begin(start)
	expired := make([]*redis.BoolCmd, len(ids))
	if _, err := admin.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			expired[i] = p.PExpire(ctx, k.key(id), time.Millisecond+rand.N(avalancheSpread))
		}
		return nil
	}); err != nil {
		return res, fmt.Errorf("expire the warm keys: %w", err)
	}
	for i, e := range expired {
		if !e.Val() {
			return res, fmt.Errorf("PEXPIRE %s: no such key; the warm keys are not where the run expects them", k.key(ids[i]))
		}
	}
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		lat []time.Duration
	)
	issued := 0
	for ctx.Err() == nil {
		elapsed := time.Since(start)
		if elapsed >= e.cfg.avalancheFor {
			break
		}
		for due := int(elapsed.Seconds() * avalancheRate); issued < due; issued++ {
			s, id := insts[issued%len(insts)], rand.Int64N(int64(len(ids)))
			wg.Go(func() {
				gctx, cancel := context.WithTimeout(ctx, avalancheDeadline)
				defer cancel()
				t0 := time.Now()
				p, err := s.get(gctx, id)
				d := time.Since(t0)
				mu.Lock()
				lat = append(lat, d)
				if checked(p, err, id) {
					res.errs++
				}
				mu.Unlock()
			})
		}
		time.Sleep(time.Millisecond)
	}
	wg.Wait()
	res.took = time.Since(start)
	slices.Sort(lat)
	res.gets, res.lat = int64(len(lat)), lat
	res.loads, res.cancelled = db.calls.Load()-calls0, db.cancelled.Load()-cancelled0
	res.perWindow = db.starts.counts()
	if res.redisCmds, err = commandCalls(ctx, admin); err != nil {
		return res, err
	}
	delete(res.redisCmds, "info")
	for i, s := range insts {
		c, ok := s.(*ca)
		if !ok {
			continue
		}
		st := c.c.Stats()
		if res.breakerOpens < 0 {
			res.breakerOpens, res.redisErrs = 0, 0
		}
		res.breakerOpens += int64(st.BreakerOpens - before[i].BreakerOpens)
		res.redisErrs += int64(st.RedisErrors - before[i].RedisErrors)
		res.lockWaitTimeouts += int64(st.LockWaitTimeouts - before[i].LockWaitTimeouts)
		res.loadErrs += int64(st.LoadErrors - before[i].LoadErrors)
		res.loaders += int64(st.Loads - before[i].Loads)
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if res.gets == 0 {
		return res, errors.New("no Get was issued")
	}
	return res, nil
}

// windows counts events per window of a fixed width, from the time given
// to begin; events before that are not counted.
type windows struct {
	width time.Duration
	mu    sync.Mutex
	start time.Time
	n     []int64
}

func (w *windows) begin(t time.Time) {
	w.mu.Lock()
	w.start, w.n = t, nil
	w.mu.Unlock()
}

func (w *windows) add(t time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.start.IsZero() {
		return
	}
	i := max(0, int(t.Sub(w.start)/w.width))
	for len(w.n) <= i {
		w.n = append(w.n, 0)
	}
	w.n[i]++
}

func (w *windows) counts() []int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.n)
}

func (r *report) avalancheTable(p func(string, ...any)) {
	c := r.cfg
	p("## 6. Expiry avalanche: %d warm keys expire within %s; %d Gets/s over %d instances for %s; database of %d connections × %s",
		c.avalancheKeys, avalancheSpread, avalancheRate, avalancheInstances, c.avalancheFor, avalancheConns, avalancheQuery)
	p("")
	p("Each instance has a go-redis client of its own on default options; each strategy gets a fresh redis-server, warmed, then every key is")
	p("given a random PEXPIRE under %s. The Gets start on schedule (open loop, uniformly random keys) whether or not earlier ones have", avalancheSpread)
	p("returned, and none has a deadline short of %s. cacheaside runs with default options, and once more with a Redis budget as", avalancheDeadline)
	p("long as go-redis's read timeout and no breaker, which shows its load side alone. Loads are database calls started, per %s", loadWindow)
	p("window from the first expiry to the last answer (mean over those windows); cancelled ones returned their context's error (a load")
	p("timeout) while waiting for a connection or mid-query. Latency is per Get, from its start. Redis commands count those run inside scripts.")
	p("")
	p("| strategy | Gets | errors | breaker opens | loads | cancelled | loads/%s max | mean | p50 | p99 | max | Redis commands | cacheaside counters |", loadWindow)
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, a := range r.avalanche {
		opens, notes := "—", ""
		if a.breakerOpens >= 0 {
			opens = strconv.FormatInt(a.breakerOpens, 10)
			notes = fmt.Sprintf("loads %d, load errors %d, lock-wait timeouts %d, Redis errors %d", a.loaders, a.loadErrs, a.lockWaitTimeouts, a.redisErrs)
		}
		p("| %s | %d | %d | %s | %d | %d | %d | %.1f | %s | %s | %s | %d | %s |", a.name, a.gets, a.errs, opens, a.loads, a.cancelled,
			a.maxWindow(), a.meanWindow(), dur(pct(a.lat, 0.5)), dur(pct(a.lat, 0.99)), dur(pct(a.lat, 1)), a.commands(), notes)
	}
	p("")
}

// warmUntilStored warms ids through s until Redis holds every one of
// them: on a busy machine a Get of cacheaside can fail open (a Redis call
// past its budget, or any call while the breaker those opened is open),
// which loads the value without storing it. Tries after the first wait
// warmPause, past the default breaker's cooldown, and go on for warmFor.
func warmUntilStored(ctx context.Context, s strategy, admin *redis.Client, key func(int64) string, ids []int64) error {
	const (
		warmFor   = 30 * time.Second
		warmPause = time.Second
	)
	deadline := time.Now().Add(warmFor)
	missing, tries := ids, 0
	for len(missing) > 0 {
		if tries > 0 {
			if time.Now().Add(warmPause).After(deadline) {
				break
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(warmPause):
			}
		}
		tries++
		if err := warmByGet(ctx, s, missing); err != nil {
			return err
		}
		exists := make([]*redis.IntCmd, len(missing))
		if _, err := admin.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range missing {
				exists[i] = p.Exists(ctx, key(id))
			}
			return nil
		}); err != nil {
			return err
		}
		var next []int64
		for i, id := range missing {
			if exists[i].Val() == 0 {
				next = append(next, id)
			}
		}
		missing = next
	}
	if len(missing) > 0 {
		return fmt.Errorf("%d warm keys not in Redis after %d warm-ups in %v, e.g. %s", len(missing), tries, warmFor, key(missing[0]))
	}
	return nil
}
