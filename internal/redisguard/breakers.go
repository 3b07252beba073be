package redisguard

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
)

// breakers holds what the guard knows about each Redis node: its circuit
// breaker and its sign of life (life.go). A single server, or the primary
// a Sentinel failover client talks to, is one node. On a
// Redis Cluster each primary node (slot owner) has its own, found from the
// key of each call, so that losing one primary sends only the keys of its
// slots to the loader while the other nodes go on answering: with one
// breaker for the whole cluster, one dead node would make every key skip
// Redis. After a failover the slot map names the promoted replica, whose
// breaker is closed, so its keys return to Redis as soon as the client has
// re-read the map (the cache asks it to on a Redis fault).
type breakers struct {
	make func(node string, changed func()) *gobreaker.CircuitBreaker[struct{}] // nil when disabled
	// one serves a single server; on a Cluster it serves the calls made
	// before the client first loaded its slot map (finding a key's node
	// then would mean a network round trip outside the budget).
	one     *Node
	cluster *redis.ClusterClient // nil unless a Cluster
	ready   atomic.Bool          // the Cluster client has a slot map

	mu    sync.Mutex                       // serialises additions to nodes
	nodes atomic.Pointer[map[string]*Node] // by node address; copy on write
}

// Node is one Redis node as the guard sees it: its breaker and its sign
// of life. Inline returns it for DoInline.
type Node struct {
	cb       *gobreaker.CircuitBreaker[struct{}] // nil when breakers are disabled
	inflight atomic.Int64                        // the guard's calls to the node that are running
	clean    cleanState                          // calls may skip cb's Execute (clean.go)
	life
	refusals        // refused.go
	conns    *conns // its connections, for replies waiting unread (unread.go)
}

// newNode returns the node of addr with a breaker of its own, if enabled.
func (b *breakers) newNode(addr string) *Node {
	n := &Node{conns: &conns{}}
	n.lastReply = &n.conns.lastReply // one cell: a reply also ends a silence (unread.go)
	ch := make(chan struct{})
	n.wake.Store(&ch)
	if b.make != nil {
		n.cb = b.make(addr, n.clean.changed)
	}
	return n
}

// newBreakers builds the breakers from cfg. onChange runs on every state
// change, under that breaker's lock.
func newBreakers(cfg Config, onChange func(node string, from, to State)) *breakers {
	b := &breakers{}
	b.cluster, _ = cfg.Client.(*redis.ClusterClient)
	if cfg.BreakerFailures > 0 {
		b.make = breakerMaker(cfg.BreakerFailures, cfg.BreakerCooldown, onChange)
	}
	b.one = b.newNode("")
	return b
}

// breakerMaker returns the function that builds the breaker of one node;
// changed runs first on each of its state changes.
func breakerMaker(failures uint32, cooldown time.Duration, onChange func(node string, from, to State)) func(node string, changed func()) *gobreaker.CircuitBreaker[struct{}] {
	return func(node string, changed func()) *gobreaker.CircuitBreaker[struct{}] {
		return gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
			Name:        node,
			MaxRequests: 1,
			Timeout:     cooldown,
			ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= failures },
			IsSuccessful: func(err error) bool {
				return !IsOutage(err)
			},
			// A call its caller gave up on, or one that was slow while
			// its node kept answering, says nothing about the node.
			IsExcluded: func(err error) bool {
				_, gone := err.(callerGone)
				return gone || errors.Is(err, ErrSlow)
			},
			OnStateChange: func(node string, from, to gobreaker.State) {
				changed()
				onChange(node, stateOf(from), stateOf(to))
			},
		})
	}
}

// forKey returns the node that owns key (the server on anything but a
// Cluster).
func (b *breakers) forKey(key string) *Node {
	return b.forAddr(b.node(key))
}

// forAddr returns the node of the Cluster node at addr; the single node
// for "" or on anything but a Cluster.
func (b *breakers) forAddr(addr string) *Node {
	if addr == "" || b.cluster == nil {
		return b.one
	}
	if m := b.nodes.Load(); m != nil {
		if n, ok := (*m)[addr]; ok {
			return n
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	old := b.nodes.Load()
	if old != nil {
		if n, ok := (*old)[addr]; ok {
			return n
		}
	}
	// One entry per address the Cluster ever had: a few hundred bytes each.
	m := make(map[string]*Node, 8)
	if old != nil {
		for a, n := range *old {
			m[a] = n
		}
	}
	n := b.newNode(addr)
	m[addr] = n
	b.nodes.Store(&m)
	return n
}

// node returns the address of the Cluster node that owns key, or "" when
// that is unknown or the client is not a Cluster client.
func (b *breakers) node(key string) string {
	if b.cluster == nil || key == "" || !b.ready.Load() {
		return ""
	}
	// The client has a slot map, so this neither blocks nor sends anything;
	// the cancelled context makes sure of it.
	node, err := b.cluster.MasterForKey(cancelled, key)
	if err != nil {
		return ""
	}
	return node.Options().Addr
}

// byNode groups idx, indexes into keys, by the Cluster node that owns
// their key, in the order nodes first appear; on anything but a Cluster
// there is one group. Multi-key calls run one group at a time under that
// node's breaker and budget, so one dead or frozen node fails only its
// keys.
func (b *breakers) byNode(keys []string, idx []int) [][]int {
	if b.cluster == nil || len(idx) < 2 {
		return [][]int{idx}
	}
	var groups [][]int
	at := make(map[string]int)
	for _, i := range idx {
		addr := b.node(keys[i])
		g, ok := at[addr]
		if !ok {
			g = len(groups)
			at[addr] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	return groups
}

// cancelled is a context that is done: a ClusterClient without a slot map
// fails at once under it instead of loading one over the network.
var cancelled = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// succeeded notes that a call through the Cluster client was answered
// (a value or a miss, not an error reply such as NOAUTH, which a client
// that could not load its slot map also returns), so the client has loaded
// its slot map.
func (b *breakers) succeeded() {
	if b.cluster != nil && !b.ready.Load() {
		b.ready.Store(true)
	}
}

// closed reports whether the breaker of key's node lets every call
// through (or there is none).
func (b *breakers) closed(key string) bool {
	cb := b.forKey(key).cb
	return cb == nil || cb.State() == gobreaker.StateClosed
}

// state is the state Guard.State reports: on a Cluster the worst state of
// any node's breaker.
func (b *breakers) state() State {
	if b.make == nil {
		return Disabled
	}
	if b.cluster == nil || !b.ready.Load() {
		return stateOf(b.one.cb.State())
	}
	worst := Closed
	if m := b.nodes.Load(); m != nil {
		for _, n := range *m {
			switch stateOf(n.cb.State()) {
			case Open:
				return Open
			case HalfOpen:
				worst = HalfOpen
			}
		}
	}
	return worst
}

// states returns the state of each node's breaker, by address ("" for
// the single server, or the calls made before a Cluster client had a slot
// map).
func (b *breakers) states() map[string]State {
	if b.make == nil {
		return map[string]State{"": Disabled}
	}
	out := map[string]State{}
	if b.cluster == nil || !b.ready.Load() {
		out[""] = stateOf(b.one.cb.State())
	}
	if m := b.nodes.Load(); m != nil {
		for addr, n := range *m {
			out[addr] = stateOf(n.cb.State())
		}
	}
	return out
}
