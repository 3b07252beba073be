package main

import (
	"context"
	"fmt"
	"runtime/metrics"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// window is what one timed run of workers did.
type window struct {
	ops, errs int64
	lat       []time.Duration // sorted; only when timed
	elapsed   time.Duration
	// goroutines and allocs created, and CPU time used, by the whole
	// process during the run.
	goroutines, allocs uint64
	cpu                time.Duration
	// Redis GETs and all commands served during the run, when counted.
	redisGets, redisCmds int64
}

func (w window) opsPerSec() float64 { return float64(w.ops) / w.elapsed.Seconds() }

// plus adds up two runs of the same strategy (latencies excepted).
func (w window) plus(o window) window {
	return window{
		ops: w.ops + o.ops, errs: w.errs + o.errs, elapsed: w.elapsed + o.elapsed,
		goroutines: w.goroutines + o.goroutines, allocs: w.allocs + o.allocs, cpu: w.cpu + o.cpu,
		redisGets: w.redisGets + o.redisGets, redisCmds: w.redisCmds + o.redisCmds,
	}
}

// sliceLen is how long each strategy runs before the next one takes over
// within a round, so that every strategy samples the whole round and a
// change in the machine's load hits all of them alike.
const sliceLen = 250 * time.Millisecond

// interleaved runs measure for each of n strategies in turns of sliceLen
// until each has run for the measurement duration, and returns the sums.
// The order rotates with each turn.
func (e *env) interleaved(n, round int, measure func(i int, d time.Duration) (window, error)) ([]window, error) {
	turns := max(1, int(e.cfg.duration/sliceLen))
	out := make([]window, n)
	for t := range turns {
		for _, i := range rotated(n, round*turns+t) {
			w, err := measure(i, e.cfg.duration/time.Duration(turns))
			if err != nil {
				return nil, err
			}
			out[i] = out[i].plus(w)
		}
	}
	return out, nil
}

// op is one request by worker w; it reports whether the request failed.
type op func(ctx context.Context, w int, i int64) (failed bool)

// hammer runs workers goroutines that call do back to back for d, then
// calls atEnd (if not nil) while the requests in flight finish, and waits
// for all of them. With timed it records every request's latency.
func hammer(ctx context.Context, workers int, d time.Duration, timed bool, atEnd func(), do op) window {
	var (
		stop atomic.Bool
		wg   sync.WaitGroup
		mu   sync.Mutex
		res  window
	)
	before, cpu0 := readCounters(), cpuTime()
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			var ops, errs int64
			var lat []time.Duration
			for i := int64(0); !stop.Load() && ctx.Err() == nil; i++ {
				var t0 time.Time
				if timed {
					t0 = time.Now()
				}
				if do(ctx, w, i) {
					errs++
				}
				if timed {
					lat = append(lat, time.Since(t0))
				}
				ops++
			}
			mu.Lock()
			res.ops, res.errs = res.ops+ops, res.errs+errs
			res.lat = append(res.lat, lat...)
			mu.Unlock()
		})
	}
	t := time.NewTimer(d)
	select {
	case <-t.C:
	case <-ctx.Done():
		t.Stop()
	}
	stop.Store(true)
	if atEnd != nil {
		atEnd()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	res.cpu = cpuTime() - cpu0
	after := readCounters()
	res.goroutines, res.allocs = after[0]-before[0], after[1]-before[1]
	slices.Sort(res.lat)
	return res
}

// readCounters returns how many goroutines and heap objects the process
// has created so far.
func readCounters() [2]uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}, {Name: "/gc/heap/allocs:objects"}}
	metrics.Read(s)
	var out [2]uint64
	for i := range s {
		if s[i].Value.Kind() == metrics.KindUint64 {
			out[i] = s[i].Value.Uint64()
		}
	}
	return out
}

// cpuTime returns the user and system CPU time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pct returns the q-quantile of sorted latencies.
func pct(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// rotated returns 0..n-1 starting at r mod n, so that no strategy is
// always measured first or last in a round.
func rotated(n, r int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = (i + r) % n
	}
	return out
}

// checked turns a Get into a failed flag: an error, or the wrong value.
func checked(p Product, err error, id int64) bool { return err != nil || p.ID != id }

type hitResult struct {
	client, name               string
	opsPerSec, ratio           []float64 // per round; ratio to raw in the same round
	goroutinesPerOp, allocsPer []float64
	cpuPerOp                   []float64 // microseconds
	errs, loads                int64
	redisErrs                  int64  // Redis calls that failed or ran past the budget (cacheaside only; -1 for the others)
	notes                      string // the strategy's own counters
}

// clientModes are the two go-redis client setups users run.
var clientModes = []struct {
	name string
	opts func(addr string) *redis.Options
}{
	{"default", func(addr string) *redis.Options { return &redis.Options{Addr: addr} }},
	{"ContextTimeoutEnabled", func(addr string) *redis.Options {
		return &redis.Options{Addr: addr, ContextTimeoutEnabled: true}
	}},
}

// measureHit measures every strategy on warm keys with each client
// setup, round-robin.
func (e *env) measureHit(ctx context.Context) ([]hitResult, error) {
	ids := make([]int64, e.cfg.keys)
	for i := range ids {
		ids[i] = int64(i)
	}
	hk := hitKinds()
	n := len(hk)
	res := make([]hitResult, len(clientModes)*n)
	subjects := make([]strategy, len(res))
	dbs := make([]*database, len(res))
	for i := range dbs {
		dbs[i] = &database{}
	}
	for ci, cm := range clientModes {
		rdb := redis.NewClient(cm.opts(e.srv.addr()))
		defer rdb.Close()
		for ki, k := range hk {
			s, err := k.open(rdb, dbs[ci*n+ki], fmt.Sprintf("h%d:", ki))
			if err != nil {
				return nil, err
			}
			defer s.close()
			if ci == 0 { // the keys are shared by both clients
				if err := s.warm(ctx, ids); err != nil {
					return nil, fmt.Errorf("%s: %w", k.name, err)
				}
			}
			subjects[ci*n+ki] = s
			res[ci*n+ki] = hitResult{client: cm.name, name: k.name}
		}
	}
	loads0 := make([]int64, len(dbs))
	for i := range dbs {
		loads0[i] = dbs[i].calls.Load()
	}
	for ci := range clientModes { // fill each client's pool before measuring
		hammer(ctx, e.cfg.goroutines, min(e.cfg.duration, warmup), false, nil, func(ctx context.Context, w int, i int64) bool {
			_, err := subjects[ci*n].get(ctx, i%int64(e.cfg.keys))
			return err != nil
		})
	}
	for r := range e.cfg.rounds {
		for ci := range clientModes {
			ws, err := e.hitRound(ctx, r, subjects[ci*n:(ci+1)*n])
			if err != nil {
				return nil, err
			}
			for ki, w := range ws {
				row := &res[ci*n+ki]
				row.opsPerSec = append(row.opsPerSec, w.opsPerSec())
				row.ratio = append(row.ratio, w.opsPerSec()/ws[0].opsPerSec())
				row.goroutinesPerOp = append(row.goroutinesPerOp, float64(w.goroutines)/float64(w.ops))
				row.allocsPer = append(row.allocsPer, float64(w.allocs)/float64(w.ops))
				row.cpuPerOp = append(row.cpuPerOp, float64(w.cpu.Microseconds())/float64(w.ops))
				row.errs += w.errs
				e.progress("hit %-22s %-32s round %d: %.0f ops/s", clientModes[ci].name, hk[ki].name, r+1, w.opsPerSec())
			}
		}
	}
	for i := range res {
		res[i].loads = dbs[i].calls.Load() - loads0[i]
		res[i].notes = subjects[i].notes()
		res[i].redisErrs = -1
		if f, ok := subjects[i].(interface{ redisErrors() int64 }); ok {
			res[i].redisErrs = f.redisErrors()
		}
	}
	return res, ctx.Err()
}

// hitRound runs round r of the hit path: each of subjects in turn
// (interleaved) reads the warm keys from the hit path's goroutines.
func (e *env) hitRound(ctx context.Context, r int, subjects []strategy) ([]window, error) {
	return e.interleaved(len(subjects), r, func(ki int, d time.Duration) (window, error) {
		s := subjects[ki]
		return hammer(ctx, e.cfg.goroutines, d, false, nil, func(ctx context.Context, w int, i int64) bool {
			id := (int64(w)*7919 + i) % int64(e.cfg.keys)
			p, err := s.get(ctx, id)
			return checked(p, err, id)
		}), ctx.Err()
	})
}

type hotResult struct {
	name                                   string
	opsPerSec, ratio, getsPerOp, cmdsPerOp []float64
	errs                                   int64
	notes                                  string
}

// measureHot has hotGoroutines goroutines read one warm key, on a
// default client, and counts the Redis commands each strategy sends.
func (e *env) measureHot(ctx context.Context) ([]hotResult, error) {
	rdb := redis.NewClient(&redis.Options{Addr: e.srv.addr()})
	defer rdb.Close()
	n := len(kinds)
	res := make([]hotResult, n)
	subjects := make([]strategy, n)
	for ki, k := range kinds {
		s, err := k.open(rdb, &database{}, fmt.Sprintf("k%d:", ki))
		if err != nil {
			return nil, err
		}
		defer s.close()
		if err := s.warm(ctx, []int64{hotKey}); err != nil {
			return nil, fmt.Errorf("%s: %w", k.name, err)
		}
		subjects[ki], res[ki].name = s, k.name
	}
	for r := range e.cfg.rounds {
		ws, err := e.interleaved(n, r, func(ki int, d time.Duration) (window, error) {
			if err := e.admin.ConfigResetStat(ctx).Err(); err != nil {
				return window{}, err
			}
			w := hammer(ctx, hotGoroutines, d, false, nil, func(ctx context.Context, _ int, _ int64) bool {
				p, err := subjects[ki].get(ctx, hotKey)
				return checked(p, err, hotKey)
			})
			calls, err := commandCalls(ctx, e.admin)
			for name, c := range calls {
				if name != "info" && !strings.HasPrefix(name, "config") {
					w.redisCmds += c
				}
			}
			w.redisGets = calls["get"]
			return w, err
		})
		if err != nil {
			return nil, err
		}
		for ki, w := range ws {
			row := &res[ki]
			row.opsPerSec = append(row.opsPerSec, w.opsPerSec())
			row.ratio = append(row.ratio, w.opsPerSec()/ws[0].opsPerSec())
			row.getsPerOp = append(row.getsPerOp, float64(w.redisGets)/float64(w.ops))
			row.cmdsPerOp = append(row.cmdsPerOp, float64(w.redisCmds)/float64(w.ops))
			row.errs += w.errs
			e.progress("hot %-32s round %d: %.0f ops/s", kinds[ki].name, r+1, w.opsPerSec())
		}
	}
	for ki := range res {
		res[ki].notes = subjects[ki].notes()
	}
	return res, ctx.Err()
}
