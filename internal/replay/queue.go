// Package replay keeps the invalidations a cache could not apply in Redis
// (a frozen, partitioned or restarting server, an open breaker) and
// applies them once Redis answers again.
//
// A Queue holds value keys, newest last, each at most once: queueing a key
// again replaces its entry (newest per key wins) and moves it to the end.
// It holds at most a fixed number of keys; past it the oldest entries are
// dropped and counted, and the caller is told of each. A background loop
// (Run) replays the oldest keys in batches with a short backoff while any
// are left, and retries at once when told that Redis answered (Kick).
//
// The read path asks, for each Redis read it is about to serve, whether
// the key had an invalidation pending at any time since the read was sent
// (Mark before the read, Check after it). With nothing queued and nothing
// replayed meanwhile that costs one atomic load at each end.
package replay

import (
	"container/list"
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// ApplyFunc applies the invalidations of keys in Redis. errs[i] is key i's
// error, nil when it was applied; errs may be nil when all were.
type ApplyFunc func(ctx context.Context, keys []string) (errs []error)

// Config is what a Queue needs.
type Config struct {
	// Max bounds the keys held; past it the oldest are dropped.
	Max int
	// Batch bounds the keys of one replay round.
	Batch int
	// Apply applies invalidations in Redis.
	Apply ApplyFunc
	// Dropped, if not nil, is told of the keys dropped by one Add, past
	// Max. It runs on Add's goroutine, outside the Queue's lock.
	Dropped func(keys []string)
}

// Counts are a Queue's counters.
type Counts struct {
	Queued   uint64 // keys queued (a key queued again counts again)
	Replayed uint64 // keys applied by a replay
	Dropped  uint64 // keys dropped past the bound, never applied
	Pending  uint64 // keys queued now
}

// Queue is a bounded set of pending invalidations. It is safe for
// concurrent use.
type Queue struct {
	cfg Config

	// state is the one word the read path loads: the number of keys
	// pending in its low 32 bits, and a count of the entries removed
	// (replayed, settled, dropped) in its high 32 bits.
	state atomic.Uint64
	seq   atomic.Uint64 // numbers the entries; the last one given out

	mu    sync.Mutex
	byKey map[string]*list.Element // of *entry
	order list.List                // of *entry, oldest first

	kick chan struct{}

	queued, replayed, dropped atomic.Uint64
}

// entry is one pending key and the number of its newest queueing.
type entry struct {
	key string
	seq uint64
}

// removal is what one removal adds to state: one more removed, one fewer
// pending.
const removal = 1<<32 - 1

// New returns an empty Queue.
func New(cfg Config) *Queue {
	return &Queue{cfg: cfg, byKey: make(map[string]*list.Element), kick: make(chan struct{}, 1)}
}

// Add queues keys, newest last, and asks Run for a replay.
func (q *Queue) Add(keys ...string) {
	if len(keys) == 0 {
		return
	}
	var dropped []string
	q.mu.Lock()
	for _, k := range keys {
		e := &entry{key: k, seq: q.seq.Add(1)}
		if el, ok := q.byKey[k]; ok {
			q.order.Remove(el)
		} else {
			q.state.Add(1)
		}
		q.byKey[k] = q.order.PushBack(e)
	}
	for q.order.Len() > q.cfg.Max {
		e := q.order.Remove(q.order.Front()).(*entry)
		delete(q.byKey, e.key)
		q.state.Add(removal)
		dropped = append(dropped, e.key)
	}
	q.mu.Unlock()
	q.queued.Add(uint64(len(keys)))
	if len(dropped) > 0 {
		q.dropped.Add(uint64(len(dropped)))
		if q.cfg.Dropped != nil {
			q.cfg.Dropped(dropped)
		}
	}
	q.Kick()
}

// Len returns the number of keys pending.
func (q *Queue) Len() int { return int(uint32(q.state.Load())) }

// Seq returns the number of the last entry queued so far: Settled removes
// the entries up to it.
func (q *Queue) Seq() uint64 { return q.seq.Load() }

// Settled removes the entries of keys numbered up to seq (see Seq): an
// invalidation or overwrite of them that began after they were queued has
// just been applied, which does what their replay would.
func (q *Queue) Settled(seq uint64, keys ...string) {
	if q.Len() == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, k := range keys {
		if el, ok := q.byKey[k]; ok && el.Value.(*entry).seq <= seq {
			q.removeLocked(el)
		}
	}
}

// removeLocked removes the entry of el.
func (q *Queue) removeLocked(el *list.Element) {
	delete(q.byKey, q.order.Remove(el).(*entry).key)
	q.state.Add(removal)
}

// Mark is what Check compares with: the Queue's state when a read was
// sent.
type Mark uint64

// Mark returns the mark to take before sending a read.
func (q *Queue) Mark() Mark { return Mark(q.state.Load()) }

// Verdict is what Check says of a read.
type Verdict int

const (
	// Clean: the key had no invalidation pending since the read was sent.
	Clean Verdict = iota
	// Pending: the key has an invalidation pending now; what Redis holds
	// of it may be older than the invalidation and must not be served.
	Pending
	// Replayed: the key may have had an invalidation pending when the
	// read was sent that has been applied since; the read may be older
	// than it. Read again.
	Replayed
)

// Check says whether a read of key sent at mark m may be served.
func (q *Queue) Check(key string, m Mark) Verdict {
	now := q.state.Load()
	if uint32(m) == 0 && now == uint64(m) {
		return Clean // nothing pending then, nothing added or removed since
	}
	q.mu.Lock()
	_, pending := q.byKey[key]
	q.mu.Unlock()
	switch {
	case pending:
		return Pending
	case now>>32 != uint64(m)>>32 && uint32(m) != 0:
		// Entries were removed since the read was sent, when some were
		// pending: this key's may have been one of them.
		return Replayed
	}
	return Clean
}

// Has reports whether key has an invalidation pending.
func (q *Queue) Has(key string) bool {
	if q.Len() == 0 {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	_, ok := q.byKey[key]
	return ok
}

// Kick asks Run for a replay now (Redis answered a call).
func (q *Queue) Kick() {
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// Counts returns the Queue's counters.
func (q *Queue) Counts() Counts {
	return Counts{
		Queued:   q.queued.Load(),
		Replayed: q.replayed.Load(),
		Dropped:  q.dropped.Load(),
		Pending:  uint64(q.Len()),
	}
}

// ApplyKey applies the pending invalidation of key now, if it has one,
// and removes it once applied. It returns nil when key has none left.
func (q *Queue) ApplyKey(ctx context.Context, key string) error {
	q.mu.Lock()
	el, ok := q.byKey[key]
	var e entry
	if ok {
		e = *el.Value.(*entry)
	}
	q.mu.Unlock()
	if !ok {
		return nil
	}
	return q.apply(ctx, []entry{e})
}

// Replay applies up to Config.Batch of the oldest pending invalidations,
// in one call of Apply, and returns the first error of a key not applied.
func (q *Queue) Replay(ctx context.Context) error {
	q.mu.Lock()
	batch := make([]entry, 0, min(q.order.Len(), q.cfg.Batch))
	for el := q.order.Front(); el != nil && len(batch) < q.cfg.Batch; el = el.Next() {
		batch = append(batch, *el.Value.(*entry))
	}
	q.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	return q.apply(ctx, batch)
}

// apply applies batch and removes the entries applied that were not
// queued again meanwhile (an entry queued again after its replay was sent
// is newer than it, and stays).
func (q *Queue) apply(ctx context.Context, batch []entry) error {
	keys := make([]string, len(batch))
	for i, e := range batch {
		keys[i] = e.key
	}
	errs := q.cfg.Apply(ctx, keys)
	var first error
	var done uint64
	q.mu.Lock()
	for i, e := range batch {
		if errs != nil && errs[i] != nil {
			if first == nil {
				first = errs[i]
			}
			continue
		}
		done++
		if el, ok := q.byKey[e.key]; ok && el.Value.(*entry).seq == e.seq {
			q.removeLocked(el)
		}
	}
	q.mu.Unlock()
	q.replayed.Add(done)
	return first
}

// The backoff of Run and Flush between rounds that failed.
const (
	firstRetry = 20 * time.Millisecond
	maxRetry   = 200 * time.Millisecond
)

// Run replays while keys are pending, until ctx is done: one round at a
// time, at once after a round that applied everything it tried, else
// after a backoff from 20 ms doubling to 200 ms. A Kick (Redis answered)
// cuts one wait short, to 20 ms; after a round that a Kick started fails
// too, Kicks are ignored until a round succeeds, so that steady reads
// while the replay keeps failing (an error reply such as OOM, a key whose
// node is down while others answer) cannot drive it faster than the
// backoff. A round while a breaker is open costs nothing (the call is not
// sent), and 200 ms keeps the replay within a fraction of a second of
// Redis healing.
func (q *Queue) Run(ctx context.Context) {
	wait, kicks := firstRetry, q.kick
	for {
		if q.Len() == 0 {
			select {
			case <-ctx.Done():
				return
			case <-q.kick:
				continue
			}
		}
		if q.Replay(ctx) == nil {
			wait, kicks = firstRetry, q.kick
			continue
		}
		live, kicked := pause(ctx, wait, kicks)
		if !live {
			return
		}
		if kicked {
			kicks = nil // one early retry per success
		}
		wait = min(2*wait, maxRetry)
	}
}

// Flush replays until no key is pending or ctx is done, with Run's
// backoff between rounds that failed. It returns nil when none is left,
// else the last round's error (or ctx's).
func (q *Queue) Flush(ctx context.Context) error {
	wait := firstRetry
	var last error
	for q.Len() > 0 && ctx.Err() == nil {
		if err := q.Replay(ctx); err != nil {
			last = err
			if live, _ := pause(ctx, wait, nil); !live {
				break
			}
			wait = min(2*wait, maxRetry)
		}
	}
	if q.Len() == 0 {
		return nil
	}
	if last == nil {
		last = ctx.Err()
	}
	return last
}

// pause waits for d, a kick (kick may be nil) or the end of ctx, and
// reports whether ctx is still live and whether a kick cut the wait
// short.
func pause(ctx context.Context, d time.Duration, kick <-chan struct{}) (live, kicked bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false, false
	case <-t.C:
		return true, false
	case <-kick:
		// Redis answered: try soon (a read's kick comes as its reply
		// arrives, with more of this burst of calls still in flight).
		return sleep(ctx, min(d, firstRetry)), true
	}
}

// sleep waits for d or the end of ctx, and reports whether ctx is live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
