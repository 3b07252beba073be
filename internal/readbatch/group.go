package readbatch

import (
	"maps"
	"sync"
	"sync/atomic"
)

// Group holds one queue per node, so that a slow or frozen node holds up
// the reads of its own keys only, and each batch is one node's round trip.
// The zero value is not usable: make one with NewGroup.
type Group struct {
	one  OneFunc
	many ManyFunc
	max  int
	shed func(error) bool

	mu     sync.Mutex                        // serialises additions to queues
	queues atomic.Pointer[map[string]*Queue] // by node; copy on write
}

// NewGroup returns a group whose queues read with one and many, at most
// max keys per batch, shedding as shed says (see New).
func NewGroup(one OneFunc, many ManyFunc, max int, shed func(error) bool) *Group {
	return &Group{one: one, many: many, max: max, shed: shed}
}

// For returns the queue of node ("" for a single server), making it on
// first use. Nodes are few (one per address a Cluster ever had), so
// queues are never removed.
func (g *Group) For(node string) *Queue {
	if m := g.queues.Load(); m != nil {
		if q, ok := (*m)[node]; ok {
			return q
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.queues.Load()
	if old != nil {
		if q, ok := (*old)[node]; ok {
			return q
		}
	}
	m := map[string]*Queue{}
	if old != nil {
		m = maps.Clone(*old)
	}
	q := New(g.one, g.many, g.max, g.shed)
	m[node] = q
	g.queues.Store(&m)
	return q
}

// Stats returns the sum of the counters of every queue of the group.
func (g *Group) Stats() Stats {
	var s Stats
	if m := g.queues.Load(); m != nil {
		for _, q := range *m {
			s = s.Add(q.Stats())
		}
	}
	return s
}
