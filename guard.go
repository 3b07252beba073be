package cacheaside

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
)

// The guard stands between the cache and every Redis call it makes. It
// gives each call a time budget that holds whatever the client's own
// settings, and a circuit breaker that stops calling Redis at all after
// consecutive failures, so that a dead or frozen Redis costs Get
// microseconds, not seconds. Each call names a key, which picks the node
// and its breaker: one per Cluster node (breakers.go). What counts as a
// failure is life.go's: no reply from the node for a whole budget, or a
// connection error; not a call that a busy process or pool held up while
// the node answered others. Such a slow call is waited for, up to the
// limit (the lock wait).
//
// The budget: go-redis honours a context deadline on socket reads only when
// the client was built with ContextTimeoutEnabled. With such a client (we
// check *redis.Client, *redis.ClusterClient and *redis.Ring) a call runs on
// the caller's goroutine under a context with the budget, as long as calls
// are calm and this process is not congested (inlineDeadline); otherwise,
// and with any other client, a call runs on a goroutine of its own that
// the caller watches (watched): it stops waiting once the node is judged
// silent or at the limit, and the abandoned call finishes by the client's
// own timeouts (or its context deadline, the limit). At most
// WithMaxAbandoned calls run on their own goroutines at once (beyond that
// a call waits for one to end, and is not sent if the node is judged
// silent meanwhile), and Close waits for them. The other known way, a
// client derived from the user's with enforced timeouts, is opt-in
// (WithTimeoutClone): go-redis's Client.WithTimeout shares the pool, so it
// costs no connections, but it does not carry over the hooks (tracing,
// metrics) the user added, and go-redis gives no way to read them; its
// socket timeouts cut every call at the budget, so with it a slow call
// cannot be waited for. Cluster and Ring clients have no such clone.
type guard struct {
	budget    time.Duration
	limit     time.Duration // the longest wait for a call to a node that answers (life.go)
	calmAfter time.Duration // how long after a slow call calls run inline again
	slowAt    atomic.Int64  // clock of the latest slow call (life.go): this process is congested
	inline    bool          // the client honours context deadlines
	clone     bool          // the client is the timeout clone: its socket timeouts are the budget
	pool      int64         // the client's connections per node; 0: unknown
	slots     chan struct{} // one per call running on its own goroutine
	abandoned atomic.Int64
	cbs       *breakers
	tracker   *tracker // registers goroutines with Close
	stats     *counters
}

// errIncomplete is wrapped by the error of every call the guard did not
// send or stopped waiting for. The call's function may still be running:
// whatever it writes must not be read.
var errIncomplete = errors.New("cacheaside: redis call incomplete")

// errSkipped is the error of a call the guard did not send.
var errSkipped = fmt.Errorf("%w: skipped: circuit open or too many abandoned calls", errIncomplete)

// errBudget is the error of a call abandoned at the budget.
var errBudget = fmt.Errorf("%w: exceeded the redis timeout", errIncomplete)

// errOverdue is the error of a call abandoned at the limit while its node
// answered other calls.
var errOverdue = fmt.Errorf("%w: %w", errIncomplete, errSlow)

// errSkippedSlow is the error of a call not sent because no slot freed up
// within the limit while its node answered other calls.
var errSkippedSlow = fmt.Errorf("%w: %w", errSkipped, errSlow)

// BreakerState is the state of the circuit breaker around Redis.
type BreakerState string

// The states of the circuit breaker.
const (
	BreakerClosed   BreakerState = "closed"    // Redis is called
	BreakerOpen     BreakerState = "open"      // Redis is skipped; Gets go to the loader
	BreakerHalfOpen BreakerState = "half-open" // one probe call is let through
	BreakerDisabled BreakerState = "disabled"  // WithBreaker(0, …)
)

// BreakerChange is one state change of a circuit breaker around Redis,
// as [WithBreakerHook] receives it.
type BreakerChange struct {
	// Node is the address of the Redis Cluster primary whose breaker
	// changed; "" for the breaker of a single server or Sentinel primary,
	// or of a Cluster client that has not loaded its slot map yet.
	Node     string
	From, To BreakerState
}

func breakerState(s gobreaker.State) BreakerState {
	switch s {
	case gobreaker.StateOpen:
		return BreakerOpen
	case gobreaker.StateHalfOpen:
		return BreakerHalfOpen
	default:
		return BreakerClosed
	}
}

// clientTraits reports whether rdb applies context deadlines to socket
// reads and writes, and how many connections it keeps per node (0 when
// unknown).
func clientTraits(rdb redis.UniversalClient) (honoursContext bool, poolSize int) {
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

// isOutage reports whether err means Redis is unavailable, as opposed to a
// miss or an error reply from a live server. An error reply such as OOM
// under maxmemory says the server is up: it must not open the breaker by
// itself. Replies that say the server cannot serve yet do count.
func isOutage(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) || errors.Is(err, errSlow) {
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

// do runs fn, a Redis call, under the breaker and the budget. fn receives a
// context that carries the call's deadline. When do returns an error that
// wraps errIncomplete, fn may still be running: the caller must not read
// anything fn writes.
func (g *guard) do(ctx context.Context, key string, fn func(context.Context) error) error {
	return g.doUndo(ctx, key, fn, nil)
}

// doUndo is do for a call whose effect must be undone if it completes
// after the guard stopped waiting for it: undo runs then, on the call's
// goroutine. (A call that runs inline may also have run on the server when
// it times out; the caller handles that case.)
func (g *guard) doUndo(ctx context.Context, key string, fn func(context.Context) error, undo func()) error {
	n := g.cbs.forKey(key)
	if d := g.inlineDeadline(n); d > 0 {
		return g.doInline(ctx, n, d, fn)
	}
	return g.breaker(ctx, n, func() error { return g.watched(ctx, n, fn, undo) })
}

// callSafely runs fn, a Redis call, and turns a panic in it (a go-redis
// hook, a dialer) into the call's error: a failed call like any other,
// never a crash and never a flight left open.
func callSafely(ctx context.Context, fn func(context.Context) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("cacheaside: redis call panicked: %w", &PanicError{Value: p, Stack: stack()})
		}
	}()
	return fn(ctx)
}

// breaker runs call unless n's breaker is open. A call that failed because
// the caller's own context ended says nothing about Redis and is not
// counted either way; nor is a slow one (errSlow).
func (g *guard) breaker(ctx context.Context, n *node, call func() error) error {
	var err error
	if n.cb == nil {
		err = call()
	} else {
		_, err = n.cb.Execute(func() (struct{}, error) {
			err := call()
			if err != nil && ctx.Err() != nil {
				return struct{}{}, callerGone{err}
			}
			return struct{}{}, err
		})
	}
	switch {
	case err == nil, errors.Is(err, redis.Nil):
		g.cbs.succeeded() // an answer: a Cluster client now has its slot map
	case errors.Is(err, gobreaker.ErrOpenState), errors.Is(err, gobreaker.ErrTooManyRequests):
		g.stats.redisSkipped.Add(1)
		return errSkipped
	default:
		if cg, ok := err.(callerGone); ok {
			return cg.err
		}
		if ctx.Err() == nil && isOutage(err) {
			note(&n.lastFault, clock())
		}
	}
	return err
}

// callerGone marks the error of a call cut short by its caller's context,
// so that the breaker excludes it.
type callerGone struct{ err error }

func (e callerGone) Error() string { return e.err.Error() }

// state returns the breakers' state.
func (g *guard) state() BreakerState { return g.cbs.state() }

// tracker counts goroutines for Close. It is the Cache's mutex and
// WaitGroup, shared with flights.
type tracker struct {
	mu     sync.RWMutex
	closed bool
	wg     sync.WaitGroup
}

// add registers one goroutine, unless Close has begun.
func (t *tracker) add() bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return false
	}
	t.wg.Add(1)
	return true
}

// spawn registers one goroutine started by work that is itself
// registered (an entry point between add and done, or a tracked
// goroutine). The count is then above zero, so it is safe even while Close
// waits, and Close waits for this goroutine too.
func (t *tracker) spawn() { t.wg.Add(1) }

func (t *tracker) done() { t.wg.Done() }

// close marks the tracker closed and reports whether it was open.
func (t *tracker) close() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return false
	}
	t.closed = true
	return true
}
