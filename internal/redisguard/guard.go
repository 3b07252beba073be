// Package redisguard stands between a cache and every Redis call it makes.
// It gives each call a time budget that holds whatever the client's own
// settings, and a circuit breaker per node that stops calling Redis at all
// after consecutive failures, so that a dead or frozen Redis costs a call
// microseconds, not seconds. Each call names a key, which picks the node
// and its breaker: one per Cluster node (breakers.go). What counts as a
// failure is life.go's: no reply from the node for a whole budget, or a
// connection error (a node that refuses connections fails its calls at
// once, refused.go); not a call that a busy process or pool held up while
// the node answered others. Such a slow call is waited for, up to the
// limit.
//
// # Running a call
//
// A call is a function of a context that sends one or more Redis commands
// for one key (or for the keys of one node) and writes its results where
// the caller reads them:
//
//	var val string
//	err := g.Do(ctx, key, func(ctx context.Context) error {
//		var err error
//		val, err = rdb.Get(ctx, key).Result()
//		return err
//	})
//
// The function's error is the call's outcome: the guard reads it to judge
// the node (nil, [redis.Nil] and error replies are answers; see
// [IsOutage]) and returns it. When Do returns an error that wraps
// [ErrIncomplete], the function may still be running on a goroutine of
// the guard: the caller must not read what it writes. [Guard.DoUndo] runs
// an undo when such an abandoned call completes after all (a lock it
// took). [Guard.DoPatient] and [Guard.PerNodePatient] send an idempotent
// write again when a try was cut at the budget while its node answered
// (patient.go). [Guard.PerNode] runs one call per Cluster node for many keys,
// concurrently; [Guard.PipelineScript] and [Guard.MGet] are its common
// calls. The hit path uses [Guard.Inline] and [Guard.DoInline], which
// allocate nothing for the call when it can run on the caller's goroutine.
//
// # The budget
//
// go-redis honours a context deadline on socket reads only when the client
// was built with ContextTimeoutEnabled ([Traits] tells). With such a client
// a call runs on the caller's goroutine under a context with the budget,
// as long as calls are calm and this process is not congested (inline.go);
// otherwise, and with any other client, a call runs on a goroutine of its
// own that the caller watches (watched.go): it stops waiting once the node
// is judged silent or at the limit, and the abandoned call finishes by the
// client's own timeouts (or its context deadline, the limit). At most
// MaxAbandoned calls run on their own goroutines at once (beyond that a
// call waits for one to end, and is not sent if the node is judged silent
// meanwhile), and [Guard.Close] waits for them. With a timeout clone
// (go-redis's Client.WithTimeout, Config.Clone) socket timeouts cut every
// call at the budget, so a slow call cannot be waited for.
package redisguard

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
)

// Config is what a Guard needs. Durations must be positive.
type Config struct {
	// Client is the client every call goes through. A *redis.ClusterClient
	// gives one breaker per primary; PipelineScript and MGet send through
	// it.
	Client redis.UniversalClient
	// Dials is the client whose dials the guard watches for refused
	// connections (refused.go): the client Client was cloned from, whose
	// pool, and so whose dial hooks, a clone shares. nil: Client.
	Dials redis.UniversalClient
	// Budget is the time a call may take before its node is judged.
	Budget time.Duration
	// Limit is the longest wait for a call to a node that answers others;
	// never less than Budget.
	Limit time.Duration
	// BreakerFailures is how many consecutive failures open a node's
	// breaker; 0 disables the breakers. BreakerCooldown is how long an
	// open breaker stays open before it lets one probe through.
	BreakerFailures uint32
	BreakerCooldown time.Duration
	// MaxAbandoned bounds the calls running on goroutines of their own;
	// at least 1.
	MaxAbandoned int
	// Inline is set when Client honours context deadlines (see Traits);
	// Clone when Client is a timeout clone whose socket timeouts are the
	// budget. PoolSize is Client's connections per node, 0 when unknown.
	Inline, Clone bool
	PoolSize      int
	// OnChange, if not nil, runs on every breaker state change, under that
	// breaker's lock: it must not call the Guard. node is the Cluster
	// primary's address, "" for the single node. It is the Guard's first
	// subscriber (Subscribe); Acquire ignores it.
	OnChange func(node string, from, to State)
	// Panicked, if not nil, turns the value of a panic in a call (a
	// go-redis hook, a dialer) into the call's error; it runs on the
	// panicking goroutine, so it may capture its stack.
	Panicked func(value any) error
}

// Guard runs Redis calls under a budget and per-node breakers. It is safe
// for concurrent use. Close waits for the calls it abandoned.
type Guard struct {
	budget    time.Duration
	limit     time.Duration
	calmAfter time.Duration // how long after a slow call calls run inline again
	slowAt    atomic.Int64  // clock of the latest slow call (life.go): this process is congested
	inline    bool          // the client honours context deadlines
	clone     bool          // the client is the timeout clone: its socket timeouts are the budget
	pool      int64         // the client's connections per node; 0: unknown
	slots     chan struct{} // one per call running on its own goroutine
	rdb       redis.UniversalClient
	panicked  func(any) error
	subsMu    sync.Mutex
	subs      []*subscriber // copied on write (shared.go)
	cbs       *breakers
	workers   *workers    // run watched calls (workers.go)
	closed    atomic.Bool // Close was called: the dial hook does nothing
	counts    counters
	ticks     *ticks // the Done channels of inline calls (deadline.go)
}

// New returns a Guard for cfg.
func New(cfg Config) *Guard {
	g := &Guard{
		budget:    cfg.Budget,
		limit:     max(cfg.Limit, cfg.Budget),
		calmAfter: calmPeriod * cfg.Budget,
		inline:    cfg.Inline,
		clone:     cfg.Clone,
		pool:      int64(cfg.PoolSize),
		slots:     make(chan struct{}, max(cfg.MaxAbandoned, 1)),
		rdb:       cfg.Client,
		panicked:  cfg.Panicked,
		ticks:     newTicks(cfg.Budget),
	}
	g.workers = newWorkers()
	// A Guard dropped without Close: its idle workers end at once, not
	// after workerIdle.
	runtime.AddCleanup(g, (*workers).stop, g.workers)
	if cfg.OnChange != nil {
		g.Subscribe(cfg.OnChange)
	}
	g.cbs = newBreakers(cfg, g.breakerChanged)
	dials := cfg.Dials
	if dials == nil {
		dials = cfg.Client
	}
	g.watchDials(dials)
	return g
}

// Close waits for every call the guard abandoned to end (by the client's
// own timeouts, at most the limit). Call it once no call can start any
// more; it is safe to call more than once.
func (g *Guard) Close() {
	g.closed.Store(true)
	g.workers.close()
	g.ticks.stop()
}

// Limit is the longest the guard waits for a call to a node that answers.
func (g *Guard) Limit() time.Duration { return g.limit }

// HonoursDeadlines reports whether calls may have reached the server when
// they time out on the caller's goroutine: the client honours context
// deadlines, so an abandoned call is not left running to completion.
func (g *Guard) HonoursDeadlines() bool { return g.inline }

// ErrIncomplete is wrapped by the error of every call the guard did not
// send or stopped waiting for. The call's function may still be running:
// whatever it writes must not be read.
var ErrIncomplete = errors.New("cacheaside: redis call incomplete")

// ErrSkipped is the error of a call the guard did not send (it wraps
// ErrIncomplete).
var ErrSkipped = fmt.Errorf("%w: skipped: circuit open or too many abandoned calls", ErrIncomplete)

// errBudget is the error of a call abandoned at the budget.
var errBudget = fmt.Errorf("%w: exceeded the redis timeout", ErrIncomplete)

// errOverdue is the error of a call abandoned at the limit while its node
// answered other calls.
var errOverdue = fmt.Errorf("%w: %w", ErrIncomplete, ErrSlow)

// errSkippedSlow is the error of a call not sent because no slot freed up
// within the limit while its node answered other calls.
var errSkippedSlow = fmt.Errorf("%w: %w", ErrSkipped, ErrSlow)

// IsOutage reports whether err means Redis is unavailable, as opposed to a
// miss or an error reply from a live server. An error reply such as OOM
// under maxmemory says the server is up: it must not open the breaker by
// itself. Replies that say the server cannot serve yet do count.
func IsOutage(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, ErrSlow) {
		return false
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		for _, p := range []string{"LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY"} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
		return false
	}
	return true
}

// Traits reports whether rdb applies context deadlines to socket reads and
// writes, and how many connections it keeps per node (0 when unknown):
// Config.Inline and Config.PoolSize.
func Traits(rdb redis.UniversalClient) (honoursContext bool, poolSize int) {
	switch c := rdb.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled, c.Options().PoolSize
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled, c.Options().PoolSize
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled, c.Options().PoolSize
	}
	return false, 0
}

// Do runs fn, a Redis call for key, under key's node's breaker and the
// budget. fn receives a context that carries the call's deadline. key ""
// is a call of no particular node (PUBLISH): the single node's breaker.
// When Do returns an error that wraps ErrIncomplete, fn may still be
// running: the caller must not read anything fn writes.
func (g *Guard) Do(ctx context.Context, key string, fn func(context.Context) error) error {
	return g.DoUndo(ctx, key, fn, nil)
}

// DoUndo is Do for a call whose effect must be undone if it completes
// after the guard stopped waiting for it: undo, if not nil, runs then, on
// the call's goroutine. (A call that runs inline may also have run on the
// server when it times out; the caller handles that case, see
// HonoursDeadlines.)
func (g *Guard) DoUndo(ctx context.Context, key string, fn func(context.Context) error, undo func()) error {
	n := g.cbs.forKey(key)
	if d := g.inlineDeadline(n); d > 0 {
		return g.DoInline(ctx, n, d, fn)
	}
	return g.breaker(ctx, n, func() error { return g.watched(ctx, n, fn, undo) })
}

// Bypass runs fn, a Redis call, on the calling goroutine past the
// breakers and the budget (fn's context bounds it), turning a panic in it
// into its error. It is for work that must reach Redis even while this
// process judges it failing: giving back a lock other processes wait for.
func (g *Guard) Bypass(ctx context.Context, fn func(context.Context) error) error {
	return g.callSafely(ctx, fn)
}

// callSafely runs fn, a Redis call, and turns a panic in it (a go-redis
// hook, a dialer) into the call's error: a failed call like any other,
// never a crash and never a caller left waiting.
func (g *Guard) callSafely(ctx context.Context, fn func(context.Context) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			var perr error
			if g.panicked != nil {
				perr = g.panicked(p)
			} else {
				perr = fmt.Errorf("%v", p)
			}
			err = fmt.Errorf("cacheaside: redis call panicked: %w", perr)
		}
	}()
	return fn(ctx)
}

// breaker runs call unless n's breaker is open. A call that failed because
// the caller's own context ended says nothing about Redis and is not
// counted either way; nor is a slow one (ErrSlow).
func (g *Guard) breaker(ctx context.Context, n *Node, call func() error) error {
	var err error
	if n.cb == nil {
		err = g.send(n, call)
	} else if gen, w, clean := n.clean.enter(); clean {
		err = g.send(n, call)
		switch {
		case err != nil && ctx.Err() != nil:
			// The caller left: counted neither way.
		case IsOutage(err):
			n.clean.failed(n.cb, gen, err)
		default:
			n.clean.succeeded(n.cb, gen, w, err)
		}
	} else {
		counting := false // a failure is being counted: n.clean.end after Execute
		_, err = n.cb.Execute(func() (struct{}, error) {
			err := g.send(n, call)
			if err != nil && ctx.Err() != nil {
				return struct{}{}, callerGone{err}
			}
			if IsOutage(err) {
				n.clean.begin()
				counting = true
			}
			return struct{}{}, err
		})
		if counting {
			n.clean.end()
		} else if err == nil || !IsOutage(err) {
			n.clean.settle(n.cb)
		}
	}
	switch {
	case err == nil, errors.Is(err, redis.Nil):
		g.cbs.succeeded() // an answer: a Cluster client now has its slot map
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		g.counts.skipped.Add(1)
		return ErrSkipped
	default:
		if cg, ok := err.(callerGone); ok {
			return cg.err
		}
		if ctx.Err() == nil && IsOutage(err) {
			now := clock()
			note(&n.lastFault, now)
			n.stillRefusing(now)
		}
	}
	return err
}

// send runs call unless n refuses connections (refused.go).
func (g *Guard) send(n *Node, call func() error) error {
	if n.refusing(int64(g.budget)) {
		g.counts.skipped.Add(1)
		return errRefused
	}
	return call()
}

// callerGone marks the error of a call cut short by its caller's context,
// so that the breaker excludes it.
type callerGone struct{ err error }

func (e callerGone) Error() string { return e.err.Error() }
