package readbatch

import "sync/atomic"

// Stats counts what a queue (or a group of them) did since it was made.
type Stats struct {
	Lone    uint64 // reads sent at once, alone: nothing of their node was in flight
	Batches uint64 // batches sent (a batch of one key is a plain read)
	Batched uint64 // keys read in batches: Batched/Batches is the mean batch size
	Left    uint64 // callers whose context ended while they waited for a batch
	Shed    uint64 // keys of batches failed unsent, behind a read that failed (see New)
}

// Add returns the sum of s and t.
func (s Stats) Add(t Stats) Stats {
	return Stats{Lone: s.Lone + t.Lone, Batches: s.Batches + t.Batches, Batched: s.Batched + t.Batched, Left: s.Left + t.Left, Shed: s.Shed + t.Shed}
}

// counters are the live form of Stats.
type counters struct {
	lone, batches, batched, left, shed atomic.Uint64
}

// Stats returns the queue's counters.
func (q *Queue) Stats() Stats {
	return Stats{Lone: q.stats.lone.Load(), Batches: q.stats.batches.Load(), Batched: q.stats.batched.Load(), Left: q.stats.left.Load(), Shed: q.stats.shed.Load()}
}
