package redisguard

import (
	"sync/atomic"

	"github.com/sony/gobreaker/v2"
)

// State is the state of a node's circuit breaker, or of the guard's
// breakers together (Guard.State).
type State int

// The states of a breaker.
const (
	Closed   State = iota // Redis is called
	Open                  // Redis is skipped
	HalfOpen              // one probe call is let through
	Disabled              // Config.BreakerFailures is 0
)

func stateOf(s gobreaker.State) State {
	switch s {
	case gobreaker.StateOpen:
		return Open
	case gobreaker.StateHalfOpen:
		return HalfOpen
	default:
		return Closed
	}
}

// State returns the breakers' state: on a Cluster the most open of the
// nodes' breakers.
func (g *Guard) State() State { return g.cbs.state() }

// Closed reports whether the breaker of key's node lets every call through
// (or there is none): while it does not, a call for key may be the probe,
// which can take the whole budget.
func (g *Guard) Closed(key string) bool { return g.cbs.closed(key) }

// breakerChanged runs on every breaker state change, under the breaker's
// lock.
func (g *Guard) breakerChanged(node string, from, to State) {
	if to == Open {
		g.counts.opens.Add(1)
	}
	g.notify(node, from, to)
}

// Counts are what a Guard counted since New. Every counter only grows.
type Counts struct {
	Slow      uint64 // calls past the budget while their node answered others: waited for, not failures
	Skipped   uint64 // calls not sent: breaker open or too many abandoned calls
	Abandoned uint64 // calls the guard stopped waiting for
	Opens     uint64 // times a breaker opened
}

// counters are the live form of Counts.
type counters struct {
	slow, skipped, abandoned, opens atomic.Uint64
}

// Counts returns a snapshot of the guard's counters.
func (g *Guard) Counts() Counts {
	return Counts{
		Slow:      g.counts.slow.Load(),
		Skipped:   g.counts.skipped.Load(),
		Abandoned: g.counts.abandoned.Load(),
		Opens:     g.counts.opens.Load(),
	}
}

// States returns the state of each node's breaker, by node address: ""
// for a single server, or for the calls made before a Cluster client had
// a slot map.
func (g *Guard) States() map[string]State { return g.cbs.states() }
