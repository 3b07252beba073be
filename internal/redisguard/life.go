package redisguard

import (
	"context"
	"errors"
	"net"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// A Redis call can outrun its budget for reasons that have nothing to do
// with Redis: this process is short of CPU (a cold start under load, GC, a
// load avalanche), the call waits behind this process's other calls for a
// pooled connection, or it waits for the first dial of a fresh client.
// Counting those as Redis failures opens the breaker on a healthy server
// and makes flights load without the fill lock: overload turns into an
// outage. So the guard judges a node by its sign of life, a reply (a value,
// a miss or an error reply) to any call to it, and by whether this process
// is congested: more goroutines ready to run than it runs at once (busy),
// or at least as many calls to the node running as the client has
// connections to it.
//
// A Redis failure is a call that ends with a connection error (refused,
// reset, closed), or with an error reply saying that the server cannot
// serve (IsOutage), or that waits on a node that refused a dial since the
// call began and has not answered since (refused.go: it stops waiting at
// once, and new calls to the node fail without being sent for a budget),
// or that waits a whole quiet window with no reply from
// its node: the budget, or while this process is congested, twice the
// budget or as long as the node's replies took lately, whichever is
// longer. Silence is not judged at all while this process has many more
// goroutines ready to run than it runs (busy: replies may sit unread
// behind them), nor at a check that itself ran late by a quarter budget
// or more, nor while no request to the node has waited a whole window
// unanswered (this call's may not be sent yet); such a call waits on, up
// to the limit. A frozen Redis holds its callers blocked, not runnable,
// so this costs freeze detection only in a process that is busy for other
// reasons. A call whose node's reply reached this process unread
// (unread.go: the kernel has it, a goroutine has not read it) is slow,
// not failed. A call past the budget while its node answers other calls,
// promptly (within the budget of those calls) or while this process is
// congested, is slow, not failed: the guard waits on for it, and it counts
// neither for nor against the breaker. Calls sent before the node first
// answered this guard wait for the client's first dial. Any wait ends at
// the limit (Config.Limit: for a cache, its lock wait, as long as a Get
// already waits for a value another process loads). So a frozen,
// blackholed or dead Redis still costs a call about the budget once the node has answered once, while a
// Redis that answers, only later than the budget, fails its calls as
// before unless this process is the one holding them up.

// clockBase anchors clock.
var clockBase = time.Now()

// clock returns monotonic nanoseconds since the package started; never 0.
func clock() int64 { return int64(time.Since(clockBase)) + 1 }

// instant returns the time of clock reading c, with a monotonic reading
// (so that a deadline from it is measured like one from time.Now).
func instant(c int64) time.Time { return clockBase.Add(time.Duration(c - 1)) }

// life is what the guard knows about whether one node answers. Each
// last* field holds the clock of the latest such event, 0 for none yet.
type life struct {
	// lastReply: a call got a reply. The cell is the node's conns'
	// (unread.go), for which a reply also ends a silence.
	lastReply  *atomic.Int64
	lastPrompt atomic.Int64 // a call got a reply within the budget
	lastFault  atomic.Int64 // a call failed (see IsOutage), or waited a quiet window
	// A call cut at the budget by its deadline while the node had answered
	// others since it began: slow if the node answers after the cut, or
	// caught by a freeze if it does not.
	lastCut atomic.Int64
	// The longest a call waited for its reply lately, and since when.
	slowest, slowestAt atomic.Int64
}

// note raises t to now.
func note(t *atomic.Int64, now int64) {
	if t.Load() < now {
		t.Store(now)
	}
}

// cold reports that the node has neither answered nor failed yet: calls to
// it are waiting for the client's first dial.
func (l *life) cold() bool { return l.lastReply.Load() == 0 && l.lastFault.Load() == 0 }

// replied notes a reply, at now, to a call that began at start.
func (l *life) replied(start, now, budget, period int64) {
	d := now - start
	if d > l.slowest.Load() || now-l.slowestAt.Load() > period {
		l.slowest.Store(d)
		l.slowestAt.Store(now)
	}
	if d <= budget {
		note(&l.lastPrompt, now)
	}
	note(l.lastReply, now)
}

// calmPeriod, in budgets, is how long a slow call is remembered: how long
// calls keep running where the guard can wait past the budget, and how
// long the node's quiet window stays as long as that call's wait.
const calmPeriod = 10

// verdict is what the guard makes of a call still running at a check.
type verdict int

const (
	waiting verdict = iota // no evidence against the node yet: keep waiting
	slow                   // the node answers other calls: keep waiting
	silent                 // the node does not answer: a Redis failure
	overdue                // waited the limit for a node that answers
)

// watch is one call's view of its node's life. Times are clock values and
// nanoseconds.
type watch struct {
	l         *life
	start     int64 // when the call began
	cold      bool  // the node had not answered when the call began
	budget    int64
	limit     int64
	period    int64       // calmPeriod budgets
	congested func() bool // this process is busy, or its calls fill the node's pool
	// starved reports that this process has many more goroutines ready to
	// run than it runs (busy): replies may then sit unread, so silence is
	// no evidence against the node. nil: never.
	starved func() bool
	// cs are the node's connections, where a reply may wait unread
	// (unread.go). nil: none looked at.
	cs *conns
}

// judge decides about a call still running at the check due at due, run
// at now.
func (w *watch) judge(due, now int64) verdict {
	last := w.l.lastReply.Load()
	if now-w.start >= w.limit {
		if last >= w.start || w.replyWaiting() {
			return overdue
		}
		return silent
	}
	if f := w.l.lastFault.Load(); w.cold && f >= w.start && f > last {
		return silent // another call found the node failing, and nothing answered after
	}
	win, jammed := w.budget, w.congested()
	if jammed {
		win = 2 * w.budget
		if now-w.l.slowestAt.Load() <= w.period {
			win = max(win, w.l.slowest.Load())
		}
		win = min(win, w.limit)
	}
	if p := w.l.lastPrompt.Load(); p >= w.start && now-p < win {
		return slow // the node answers others promptly: this call waits on this process
	}
	switch {
	case jammed && last >= w.start && now-last < win:
		return slow // the node answers others, as fast as this process lets it
	case w.cold:
		return waiting // the first dial
	case now-w.start < win:
		return waiting // not quiet for a whole window yet
	case now-due > w.budget/4:
		return waiting // this check ran late: so may the replies' readers
	case w.starved != nil && w.starved():
		return waiting // the replies' readers may be queued behind other goroutines
	case w.cs != nil && !w.cs.unanswered(now, win) && w.cs.watchedAll():
		return waiting // no request to the node waited a window: this call's may not be sent yet (unread.go)
	case w.replyWaiting():
		return slow // a reply waits unread: this process holds the call up, not the node (unread.go)
	}
	return silent
}

// replyWaiting reports whether a reply of the node waits unread in this
// process, or did since the call began (unread.go).
func (w *watch) replyWaiting() bool { return w.cs != nil && w.cs.replyWaiting(w.start) }

// busy reports whether this process has many more goroutines ready to run
// than it runs at once (busyQueue per P): a reply may then have arrived
// and wait for its reader to be scheduled (under load the run queue, not
// the network, delays it). A short queue drains in microseconds and is
// not counted: it would send calls off the inline path for nothing. The
// answer is at most busyFor old: the runtime's metrics are read under a
// process-wide lock.
func busy() bool {
	now := clock()
	if now-busyState.at.Load() < int64(busyFor) {
		return busyState.busy.Load()
	}
	s := busySamples.Get().(*[2]metrics.Sample)
	metrics.Read(s[:])
	runnable, procs := s[0].Value, s[1].Value
	busySamples.Put(s)
	b := runnable.Kind() == metrics.KindUint64 && procs.Kind() == metrics.KindUint64 && runnable.Uint64() > busyQueue*procs.Uint64()
	busyState.busy.Store(b)
	busyState.at.Store(now)
	return b
}

const (
	busyQueue = 8                // runnable goroutines per P that make a process busy
	busyFor   = time.Millisecond // how long busy reuses its answer
)

var busyState struct {
	at   atomic.Int64 // clock of the answer
	busy atomic.Bool
}

var busySamples = sync.Pool{New: func() any {
	return &[2]metrics.Sample{{Name: "/sched/goroutines/runnable:goroutines"}, {Name: "/sched/gomaxprocs:threads"}}
}}

// ErrSlow is the error of a call that ran past the budget, or past the
// limit, while its node answered other calls: not a Redis failure.
var ErrSlow = errors.New("cacheaside: redis call slow while its node answered others")

// isReply reports whether err (the error of a call) means the server
// answered: no error, a miss, or an error reply.
func isReply(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) {
		return true
	}
	var rerr redis.Error
	return errors.As(err, &rerr)
}

// waitedHere reports whether err ended a call while it still waited in
// this process, for a pooled connection: go-redis then returns the
// context's own error, or ErrPoolTimeout after the client's PoolTimeout.
// A call that reached the node and timed out on its socket, or on a dial,
// returns a *net.OpError instead. Such a wait is overload, not an outage:
// nothing was sent.
func waitedHere(err error) bool {
	var operr *net.OpError
	return errors.Is(err, redis.ErrPoolTimeout) || (errors.Is(err, context.DeadlineExceeded) && !errors.As(err, &operr))
}

// IsTimeout reports whether err is a deadline that ran out, on the context
// or on the socket.
func IsTimeout(err error) bool {
	var nerr net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &nerr) && nerr.Timeout())
}
