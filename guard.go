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
// microseconds, not seconds. Each call names a key, which picks the
// breaker: one per Cluster node (breakers.go).
//
// The budget: go-redis honours a context deadline on socket reads only when
// the client was built with ContextTimeoutEnabled. With such a client (we
// check *redis.Client, *redis.ClusterClient and *redis.Ring) a call runs on
// the caller's goroutine under a context with the budget. With any other
// client a call runs on a goroutine of its own and the caller stops waiting
// at the budget; the abandoned call finishes by the client's own timeouts.
// At most WithMaxAbandoned calls may be abandoned at once (beyond that the
// guard fails calls at once instead of piling them up on the pool), and
// Close waits for them. The other known way, a client derived from the
// user's with enforced timeouts, is opt-in (WithTimeoutClone): go-redis's
// Client.WithTimeout shares the pool, so it costs no connections, but it
// does not carry over the hooks (tracing, metrics) the user added, and
// go-redis gives no way to read them; Cluster and Ring clients have no
// such clone.
type guard struct {
	budget    time.Duration
	inline    bool          // the client honours context deadlines
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

// honoursContext reports whether rdb applies context deadlines to socket
// reads and writes.
func honoursContext(rdb redis.UniversalClient) bool {
	switch c := rdb.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled
	}
	return false
}

// isOutage reports whether err means Redis is unavailable, as opposed to a
// miss or an error reply from a live server. An error reply such as OOM
// under maxmemory says the server is up: it must not open the breaker by
// itself. Replies that say the server cannot serve yet do count.
func isOutage(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) {
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
// context that carries the budget as its deadline. When do returns an error
// that wraps errIncomplete, fn may still be running: the caller must not
// read anything fn writes.
func (g *guard) do(ctx context.Context, key string, fn func(context.Context) error) error {
	if g.inline {
		return g.doInline(ctx, key, fn)
	}
	return g.breaker(ctx, key, func() error { return g.abandonable(ctx, fn, nil) })
}

// doUndo is do for a call whose effect must be undone if it completes
// after the guard stopped waiting for it: undo runs then, on the call's
// goroutine. (With a client that honours context deadlines a timed-out
// call may also have run on the server; the caller handles that case.)
func (g *guard) doUndo(ctx context.Context, key string, fn func(context.Context) error, undo func()) error {
	if g.inline {
		return g.doInline(ctx, key, fn)
	}
	return g.breaker(ctx, key, func() error { return g.abandonable(ctx, fn, undo) })
}

// doInline runs fn on the calling goroutine under a context with the
// budget. It is separate from the abandoning path so that fn does not
// escape: a hit then allocates no closure.
func (g *guard) doInline(ctx context.Context, key string, fn func(context.Context) error) error {
	return g.breaker(ctx, key, func() error {
		rctx, cancel := context.WithTimeout(ctx, g.budget)
		defer cancel()
		return callSafely(rctx, fn)
	})
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

// breaker runs call unless the breaker of key's node is open. A call that
// failed because the caller's own context ended says nothing about Redis
// and is not counted either way.
func (g *guard) breaker(ctx context.Context, key string, call func() error) error {
	var err error
	if cb := g.cbs.forKey(key); cb == nil {
		err = call()
	} else {
		_, err = cb.Execute(func() (struct{}, error) {
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
	}
	return err
}

// callerGone marks the error of a call cut short by its caller's context,
// so that the breaker excludes it.
type callerGone struct{ err error }

func (e callerGone) Error() string { return e.err.Error() }

// abandonable runs fn on a goroutine of its own and stops waiting at the
// budget: the way to bound a call on a client that ignores context
// deadlines on socket reads. At most maxAbandoned such calls run at once; a
// call that finds no free slot within the budget is not sent. onLate, if
// not nil, runs on the call's goroutine when a call that was abandoned
// completes after all, to undo what it did (a fill lock it took).
func (g *guard) abandonable(ctx context.Context, fn func(context.Context) error, onLate func()) error {
	rctx, cancel := context.WithTimeout(ctx, g.budget)
	defer cancel()
	select {
	case g.slots <- struct{}{}:
	default:
		select {
		case g.slots <- struct{}{}:
		case <-rctx.Done():
			g.stats.redisSkipped.Add(1)
			return errSkipped
		}
	}
	// state: 0 running, 1 finished in time, 2 abandoned. Whoever moves it
	// first decides who accounts for an abandoned call.
	var state atomic.Int32
	done := make(chan error, 1)
	g.tracker.spawn()
	go func() {
		defer g.tracker.done()
		err := callSafely(rctx, fn)
		<-g.slots
		done <- err
		if !state.CompareAndSwap(0, 1) {
			g.abandoned.Add(-1)
			if onLate != nil {
				onLate()
			}
		}
	}()
	select {
	case err := <-done:
		return err
	case <-rctx.Done():
	}
	// The budget ran out (or the caller left). The call goes on until the
	// client's own timeouts end it; count it while it does.
	g.abandoned.Add(1)
	if !state.CompareAndSwap(0, 2) {
		g.abandoned.Add(-1)
		return <-done
	}
	g.stats.abandoned.Add(1)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", errIncomplete, err)
	}
	return fmt.Errorf("%w (%v)", errBudget, g.budget)
}

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
