package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// runner drives the lanes through the timeline.
type runner struct {
	cfg   Config
	ctl   redisCtl
	lanes []*lane
	out   *reporter
	wg    sync.WaitGroup // requests in flight
	t0    time.Time
}

// run runs the whole scenario and returns its result. It prints the header,
// the live lines (unless cfg.Quiet) and notes to w; the caller prints the
// summary. Everything it starts is stopped before it returns.
func run(ctx context.Context, cfg Config, w io.Writer) (res *Result, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	silenceGoRedis()
	ctl, err := openRedisCtl(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, ctl.close()) }()

	var dbs []*meteredDB
	defer func() {
		for _, db := range dbs {
			db.close()
		}
	}()
	for range 2 { // one database per strategy
		db, err := newDatabase(ctx, cfg)
		if err != nil {
			return nil, err
		}
		dbs = append(dbs, &meteredDB{database: db})
	}

	tb := newTextbook(ctl.addr(), cfg.Instances, dbs[0])
	ca, err := newCacheAside(ctl.addr(), cfg.Instances, cfg.Keys, dbs[1])
	if err != nil {
		_ = tb.close()
		return nil, err
	}
	r := &runner{cfg: cfg, ctl: ctl, out: newReporter(w, cfg)}
	for i, s := range []strategy{tb, ca} {
		r.lanes = append(r.lanes, &lane{s: s, db: dbs[i], win: make([]window, cfg.total()+restartSeconds)})
	}
	r.out.header(ctl.describe(), describeDB(cfg))

	res, err = r.timeline(ctx)
	// Requests are done: close the caches, then the clients.
	err = errors.Join(err, ca.close(), tb.close())
	if res != nil {
		res.Notes = append(res.Notes, l1Note(cfg, res), cacheAsideNotes(ca.stats()), goRedisNote())
	}
	return res, err
}

// newDatabase returns the database of one strategy: PostgreSQL when a URL
// was given, else the simulated one.
func newDatabase(ctx context.Context, cfg Config) (database, error) {
	if cfg.DatabaseURL != "" {
		return newPostgresDB(ctx, cfg.DatabaseURL, cfg.Keys, cfg.DBConns)
	}
	return newSimDB(cfg.Keys, cfg.DBLatency, cfg.DBConns), nil
}

func describeDB(cfg Config) string {
	if cfg.DatabaseURL != "" {
		return fmt.Sprintf("PostgreSQL (table %s, %d rows), a pgxpool of %d connections per strategy", pgTable, cfg.Keys, cfg.DBConns)
	}
	return fmt.Sprintf("simulated, in process: %v ±25%% per query, %d connections per strategy (queries wait for one)", cfg.DBLatency, cfg.DBConns)
}

// timeline offers the load, samples each second, kills and restarts Redis
// at the phase boundaries, and builds the result once the last request is
// done. The kill and the restart run beside the sampling: on a busy
// machine closing a server can take seconds, and the new redis-server
// seconds to answer, and a sampling loop that waited for them filed all of
// those seconds' cache counters under the first one and left the others
// empty. The recovery phase lasts cfg.Recovery from
// the second the restarted Redis answered in, so that a slow restart does
// not eat it: the run is that much longer, and goes on past its planned
// end while the restart is pending.
func (r *runner) timeline(ctx context.Context) (*Result, error) {
	cfg := r.cfg
	total := cfg.total()
	maxTotal := len(r.lanes[0].win)
	killAt := secs(cfg.Warm + cfg.Healthy)
	restartAt := killAt + secs(cfg.Outage)
	var runErr error

	r.t0 = time.Now()
	stop := make(chan struct{})
	var pacer sync.WaitGroup
	pacer.Go(func() { r.pace(ctx, stop) })

	if cfg.Warm == 0 {
		r.out.note("no warming phase: the healthy phase starts with an empty Redis and a cold L1")
	}
	var rs *restart // nil until the restart begins
	var killing, restarter sync.WaitGroup
	var killErr error      // set before killing is done
	var killedAt time.Time // when the kill returned; set before killing is done
	outageKeyQueries := make([]uint64, len(r.lanes))
	outageRepeats := make([]uint64, len(r.lanes))
	outageCalls := make([][][]keyLoad, len(r.lanes))
loop:
	for i := 0; i < maxTotal && (i < total || rs.pending() || r.notBack(rs)); i++ {
		total = max(total, i+1) // a second past the planned end is the timeline's too
		if err := r.waitSecond(ctx, i, rs); err != nil {
			runErr = err
			break loop
		}
		for _, l := range r.lanes {
			l.sample(i)
		}
		if afterSample != nil {
			afterSample(i)
		}
		r.out.live(i, total, r.lanes)
		if rs.justDone() {
			if rs.err != nil {
				runErr = fmt.Errorf("restart redis: %w", rs.err)
				break loop
			}
			total = min(max(total, secs(rs.at.Sub(r.t0))+secs(cfg.Recovery)), maxTotal)
			r.out.note(fmt.Sprintf("Redis restarted empty on the same address (answering after %v): recovery begins", rs.took().Round(time.Millisecond)))
		}
		switch i + 1 {
		case secs(cfg.Warm):
			r.out.note("warming done: L1 of every cacheaside instance starts the healthy phase warm (each Redis hit of the warming phase filled it)")
		case killAt:
			// Beside the sampling too: closing a server with connections
			// in flight can take seconds on a busy machine.
			killing.Go(func() {
				if killErr = r.ctl.kill(); killErr == nil {
					killedAt = time.Now()
					for _, l := range r.lanes {
						l.markDown()
					}
				}
			})
			for _, l := range r.lanes {
				l.db.countKeys()
			}
			r.out.note("Redis killed: outage begins")
		case restartAt:
			for k, l := range r.lanes {
				outageKeyQueries[k], outageRepeats[k], outageCalls[k] = l.db.mostPerKey()
			}
			rs = &restart{start: time.Now(), done: make(chan struct{})}
			restarter.Go(func() {
				defer close(rs.done)
				if killing.Wait(); killErr != nil {
					rs.err = fmt.Errorf("the kill before it: %w", killErr)
				} else {
					rs.err = r.ctl.restart(ctx)
				}
				rs.at = time.Now()
				for _, l := range r.lanes {
					l.markUp()
				}
			})
		}
	}
	close(stop)
	pacer.Wait()
	r.wg.Wait()
	// Requests that ended after the last sample belong to the last second.
	for _, l := range r.lanes {
		l.trim(total)
		l.sample(total - 1)
	}
	restarter.Wait()
	killing.Wait()
	if runErr == nil && rs != nil && rs.err != nil {
		runErr = fmt.Errorf("restart redis: %w", rs.err)
	}
	if runErr == nil && killErr != nil {
		runErr = fmt.Errorf("kill redis: %w", killErr)
	}
	if runErr != nil {
		return nil, runErr
	}
	var back time.Time // when Redis answered again; zero if it never did
	if rs != nil {
		back = rs.at
	}
	res := buildResult(cfg, r.ctl.describe(), r.lanes, r.t0, back)
	for k := range r.lanes {
		res.Strategies[k].Summary.OutageMaxKeyQueries = outageKeyQueries[k]
		res.Strategies[k].Summary.OutageRepeatedQueries = outageRepeats[k]
		res.Strategies[k].OutageRepeats = outageCalls[k]
		res.Strategies[k].Summary.DownGets, res.Strategies[k].Summary.DownLocalHits = r.lanes[k].whileDown()
	}
	if rs != nil {
		res.RestartMs = ms(rs.took())
		res.DownMs = ms(rs.at.Sub(killedAt))
	}
	res.RunSeconds = time.Since(r.t0).Seconds()
	return res, nil
}

// notBack reports whether the restarted Redis answers and some strategy
// has not used it again yet: the timeline goes on (up to its last window)
// until each has, or the recovery phase would show a restart that the
// cache has not come back from. On a busy machine a breaker's probe can
// miss the Redis timeout for seconds after the restart: under 6 busy
// loops and three copies at once, three of four instances' breakers were
// open at every sample of the planned 8s of recovery, and closed only at
// the run's last sample, after its requests ended.
func (r *runner) notBack(rs *restart) bool {
	if !rs.finished() || rs.err != nil {
		return false
	}
	for _, l := range r.lanes {
		if l.backAfter == 0 {
			return true
		}
	}
	return false
}

// afterSample, when a test sets it, is called with i each time the
// timeline has sampled second i.
var afterSample func(i int)

// waitSecond waits for the end of second i. Once Redis answers again after
// the restart it also polls, every few milliseconds, whether each strategy
// uses Redis again, to time that more finely than the one-second windows
// can.
func (r *runner) waitSecond(ctx context.Context, i int, rs *restart) error {
	end := r.t0.Add(time.Duration(i+1) * time.Second)
	for {
		pending := rs != nil && !rs.finished()
		if rs.finished() && rs.err == nil {
			for _, l := range r.lanes {
				if l.backAfter == 0 && l.s.redisBack(rs.at) {
					l.backAfter = time.Since(rs.at)
				}
				pending = pending || l.backAfter == 0
			}
		}
		wait := time.Until(end)
		if wait <= 0 {
			return nil
		}
		if pending {
			wait = min(wait, 5*time.Millisecond)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// pace offers the load open-loop: every millisecond it starts the
// requests that are due by the configured rate, each on its own
// goroutine, whatever the previous ones are doing. Both strategies get the
// same key at the same moment.
func (r *runner) pace(ctx context.Context, stop <-chan struct{}) {
	cfg := r.cfg
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	zipf := rand.NewZipf(rng, zipfS, 1, uint64(cfg.Keys-1))
	limit := cfg.maxInFlight()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	var issued int64
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		due := int64(cfg.Rate * time.Since(r.t0).Seconds())
		for ; issued < due; issued++ {
			id := int64(zipf.Uint64()) + 1
			inst := int(issued % int64(cfg.Instances))
			for _, l := range r.lanes {
				if l.inflight.Load() >= limit {
					l.record(r.t0, 0, true, true, answerNone, nil)
					continue
				}
				l.inflight.Add(1)
				r.wg.Go(func() {
					defer l.inflight.Add(-1)
					r.request(ctx, l, inst, id)
				})
			}
		}
	}
}

// request serves one request under the per-request deadline, as an HTTP
// handler would, and records how long it took. A request that returned an
// error or ran past the deadline failed.
func (r *runner) request(ctx context.Context, l *lane, inst int, id int64) {
	rctx, cancel := context.WithTimeout(withInstance(context.WithValue(ctx, requestKey{}, true), inst), r.cfg.Deadline)
	defer cancel()
	start := time.Now()
	_, a, err := l.s.get(rctx, inst, id)
	d := time.Since(start)
	l.record(r.t0, d, err != nil || d > r.cfg.Deadline, false, a, err)
}

// goRedisLogs counts the lines go-redis logged (dial failures during the
// outage); they are counted instead of printed so the live lines stay
// readable.
var goRedisLogs atomic.Uint64

type countingLogger struct{}

func (countingLogger) Printf(context.Context, string, ...any) { goRedisLogs.Add(1) }

var silenceOnce sync.Once

func silenceGoRedis() { silenceOnce.Do(func() { redis.SetLogger(countingLogger{}) }) }

func goRedisNote() string {
	return fmt.Sprintf("go-redis logged %d lines (dial failures while Redis was down); counted here, not printed", goRedisLogs.Load())
}
