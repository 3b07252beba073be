package redisguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"weak"

	"github.com/redis/go-redis/v9"
)

// A node that refuses connections (a killed Redis, a closed port) fails a
// call fast, not at the budget: go-redis retries a refused dial (5 times,
// 100 ms apart) and then the command, so such a call would otherwise run
// until the budget cuts it. The guard watches the client's dials through a
// go-redis hook. A node that refused a dial after its last reply is
// refusing: a watched call waiting on it stops waiting at once (it goes on
// as an abandoned call), and a new call to it is not sent while the
// refusal is younger than the budget and nothing answered (nor did a dial
// to it succeed) since; after
// that one call is sent again, which may find Redis back (a call that
// fails while the node refuses renews the refusal). A call running
// inline (a client that honours context deadlines) cannot be woken: it
// ends at its deadline, the budget, as before.

// errRefused is the error of a call the guard did not send, or stopped
// waiting for, because its node refuses connections. It wraps
// ErrIncomplete and the connection error, so it is an outage (IsOutage).
var errRefused = fmt.Errorf("%w: node refuses connections: %w", ErrIncomplete, syscall.ECONNREFUSED)

// refusals is what a node knows about its refused dials.
type refusals struct {
	// refusedAt is the clock of the latest refused dial, or of the latest
	// call let through to try the node again; 0 for none.
	refusedAt atomic.Int64
	// wake is closed, and replaced, at each refused dial: the watched
	// calls waiting on the node select on it.
	wake atomic.Pointer[chan struct{}]
}

// woken returns the channel closed at the node's next refused dial.
func (r *refusals) woken() <-chan struct{} { return *r.wake.Load() }

// refused notes a refused dial at now and wakes the calls waiting.
func (r *refusals) refused(now int64) {
	note(&r.refusedAt, now)
	ch := make(chan struct{})
	close(*r.wake.Swap(&ch))
}

// refusing reports whether n refused a dial after its last reply, within
// budget of now (see the top of this file); it reads the clock only then. A call that finds the refusal
// older than the budget claims the next try: it alone is sent (false),
// and the calls after it find the claim young.
func (n *Node) refusing(budget int64) bool {
	r := n.refusedAt.Load()
	if r == 0 || r <= n.lastReply.Load() {
		return false
	}
	if now := clock(); now-r < budget {
		return true
	}
	return !n.refusedAt.CompareAndSwap(r, clock())
}

// stillRefusing notes, at now, a call to n that failed: while n refuses
// connections (a dial refused after its last reply) that renews the
// refusal, so that a call the guard let through to try n again, and
// found it refusing, keeps the next calls from being sent for a budget.
func (n *Node) stillRefusing(now int64) {
	if r := n.refusedAt.Load(); r != 0 && r > n.lastReply.Load() {
		note(&n.refusedAt, now)
	}
}

// refusedSince reports whether n refused a dial after start with no reply
// since: a call that began at start waits in vain.
func (n *Node) refusedSince(start int64) bool {
	r := n.refusedAt.Load()
	return r >= start && r > n.lastReply.Load()
}

// isRefusal reports whether err, the error of a dial, means the address
// refuses connections: ECONNREFUSED, or a dial error that is neither a
// timeout nor the dialer's context ending.
func isRefusal(err error) bool {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var oerr *net.OpError
	return errors.As(err, &oerr) && oerr.Op == "dial" && !oerr.Timeout()
}

// dialWatch is the hook that tells the guard of refused dials. go-redis
// has no RemoveHook, so the client keeps the hook after the guard is
// closed: it holds the guard weakly and does nothing once it is gone.
type dialWatch struct{ g weak.Pointer[Guard] }

func (h dialWatch) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		g := h.g.Value()
		if g == nil || g.closed.Load() {
			return next(ctx, network, addr)
		}
		n := g.cbs.forAddr(addr)
		done := n.conns.dial() // unread.go
		conn, err := next(ctx, network, addr)
		done()
		if err != nil && !isRefusal(err) {
			return conn, err
		}
		if !g.closed.Load() {
			if err != nil {
				n.refused(clock())
			} else {
				if n.refusedAt.Load() != 0 {
					n.refusedAt.Store(0) // the node accepts connections again (a pub/sub redial)
				}
				conn = n.conns.wrap(conn) // unread.go
			}
		}
		return conn, err
	}
}

func (dialWatch) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }

func (dialWatch) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// watchDials installs the dial hook on rdb, once per guard: on a Cluster
// client or a Ring, on each node client it creates from now on (a node
// client dials through its own hooks).
func (g *Guard) watchDials(rdb redis.UniversalClient) {
	h := dialWatch{g: weak.Make(g)}
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		c.OnNewNode(func(nc *redis.Client) {
			nc.AddHook(h)
			if g := h.g.Value(); g != nil {
				g.cbs.forAddr(nc.Options().Addr).conns.client.Store(nc) // unread.go
			}
		})
	case *redis.Ring:
		c.OnNewNode(func(nc *redis.Client) { nc.AddHook(h) })
	case *redis.Client:
		c.AddHook(h)
		g.cbs.one.conns.client.Store(c) // unread.go
	case interface{ AddHook(redis.Hook) }:
		c.AddHook(h)
	}
}
