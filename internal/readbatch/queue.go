// Package readbatch sends the Redis reads of concurrent callers together,
// the way auto-pipelining clients do: a read that finds no other read of
// its node in flight is sent at once, alone; reads that arrive while one
// is in flight wait for it to end and then go out together, as one
// round trip (an MGET, or one pipeline of MGETs per slot on a Cluster
// node). A syscall pair and a server wake-up then serve many reads.
//
// A lone caller never waits for company: at one goroutine every read goes
// out at once, as a plain GET. And no caller is handed a reply to a read
// sent before it called: a caller joins only a batch that has not been
// sent, never one in flight. That is the promise a cache-aside read needs
// (a value written before the read began is seen by it).
package readbatch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// OneFunc reads one key in a round trip of its own: its value, nil and
// no error when it is missing.
type OneFunc func(ctx context.Context, key string) ([]byte, error)

// ManyFunc reads keys in one round trip and stores the value of keys[i]
// in vals[i] (nil when missing). An error fails every key; vals must not
// be read then: an abandoned call may still be writing them. The keys are
// all on one node; ManyFunc splits them by slot if it must.
type ManyFunc func(ctx context.Context, keys []string, vals [][]byte) error

// ErrShed is wrapped, beside the error of the read that failed, by the
// error of the callers of a batch that failed unsent behind it (see New).
var ErrShed = errors.New("readbatch: batch failed unsent behind a failed read")

// ErrPanicked is the error of the callers of a batch whose ManyFunc
// panicked; the panic goes on in the caller that sent the batch.
var ErrPanicked = errors.New("readbatch: batch read panicked")

// Queue batches the reads of one node. Its methods are safe for
// concurrent use; it starts no goroutines: a read runs on the goroutine
// of one of its callers.
type Queue struct {
	one  OneFunc
	many ManyFunc
	max  int
	shed func(error) bool

	mu      sync.Mutex
	busy    bool     // a read is in flight
	pending []*batch // batches not sent yet, oldest first; the head goes next

	stats counters
}

// batch is a group of reads sent together. Its fields other than the
// channels are guarded by the queue's mutex until done is closed; then
// vals and err are read-only.
type batch struct {
	keys    []string
	vals    [][]byte
	err     error
	members int           // callers still waiting for it
	leader  bool          // one of them waits for turn and sends it
	granted bool          // the read before it ended: it may be sent
	sent    bool          // sent, or abandoned by every caller
	turn    chan struct{} // closed when granted
	wake    chan struct{} // closed when the leader left: a follower takes over
	done    chan struct{} // closed once vals and err are set
}

// New returns a queue that reads lone keys with one and batches with
// many, at most max keys per batch (max < 1 means 1: no batching). When a
// read fails with an error for which shed (if not nil) returns true, say a
// node that did not answer within its budget, the batches waiting behind
// it fail with that error (and ErrShed) at once rather than wait their own
// budget: a caller's wait for a failing node is then one budget, as a lone
// read's.
// A read whose caller's context ended sheds nothing.
func New(one OneFunc, many ManyFunc, max int, shed func(error) bool) *Queue {
	return &Queue{one: one, many: many, max: max, shed: shed}
}

// Get returns the value of key (nil when missing) from a read sent after
// Get was called: at once with one when no read of the queue is in
// flight, else in the next batch, sent when the read in flight ends. It
// returns ctx.Err() as soon as ctx is done, unless the caller is sending
// a read, which ends by the read's own bounds: the batch still goes out
// for the other callers.
func (q *Queue) Get(ctx context.Context, key string) ([]byte, error) {
	q.mu.Lock()
	if !q.busy {
		q.busy = true
		q.mu.Unlock()
		q.stats.lone.Add(1)
		var err error
		defer func() { q.next(ctx, err) }()
		var v []byte
		v, err = q.one(ctx, key)
		return v, err
	}
	b, i := q.join(key)
	q.mu.Unlock()
	return q.wait(ctx, b, i)
}

// join adds key to the batch that collects reads, starting one when there
// is none or it is full, and returns the batch and key's index in it. The
// caller holds q.mu.
func (q *Queue) join(key string) (*batch, int) {
	var b *batch
	if n := len(q.pending); n > 0 && len(q.pending[n-1].keys) < max(q.max, 1) {
		b = q.pending[n-1]
	} else {
		b = &batch{turn: make(chan struct{}), wake: make(chan struct{}), done: make(chan struct{})}
		q.pending = append(q.pending, b)
	}
	b.keys = append(b.keys, key)
	b.members++
	return b, len(b.keys) - 1
}

// wait waits for batch b, sending it when this caller leads it, and
// returns the value of its key i.
func (q *Queue) wait(ctx context.Context, b *batch, i int) ([]byte, error) {
	for {
		q.mu.Lock()
		lead := !b.leader && !b.sent
		if lead {
			b.leader = true
		}
		wake := b.wake
		q.mu.Unlock()
		if lead {
			select {
			case <-b.turn:
				return q.send(ctx, b, i)
			case <-b.done: // shed
				return reply(b, i)
			case <-ctx.Done():
				q.leave(b, true)
				return nil, ctx.Err()
			}
		}
		select {
		case <-b.done:
			return reply(b, i)
		case <-wake:
			// The leader left: take over, unless another follower did.
		case <-ctx.Done():
			q.leave(b, false)
			return nil, ctx.Err()
		}
	}
}

// send reads batch b, whose turn came, for all its callers, and returns
// the value of key i. The read is not cancelled with ctx: it serves the
// other callers too, and ends by many's own bounds.
func (q *Queue) send(ctx context.Context, b *batch, i int) ([]byte, error) {
	q.mu.Lock()
	b.sent = true
	keys := b.keys
	q.mu.Unlock()
	q.stats.batches.Add(1)
	q.stats.batched.Add(uint64(len(keys)))
	vals := make([][]byte, len(keys))
	completed := false
	rctx := context.WithoutCancel(ctx)
	defer func() {
		if !completed {
			b.err = ErrPanicked
		}
		close(b.done)
		q.next(rctx, b.err)
	}()
	var err error
	if len(keys) == 1 {
		vals[0], err = q.one(rctx, keys[0])
	} else {
		err = q.many(rctx, keys, vals)
	}
	b.vals, b.err = vals, err
	completed = true
	return reply(b, i)
}

// reply returns key i's value from batch b, which is done.
func reply(b *batch, i int) ([]byte, error) {
	if b.err != nil {
		return nil, b.err
	}
	return b.vals[i], nil
}

// leave takes a caller whose context ended out of batch b. The last
// caller to leave an unsent batch abandons it (passing its turn on when
// it came); a leader that leaves others behind wakes them to take over.
func (q *Queue) leave(b *batch, leader bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stats.left.Add(1)
	b.members--
	if b.sent {
		return
	}
	if b.members == 0 {
		b.sent = true // abandoned: nobody wants its replies
		if b.granted {
			q.nextLocked(nil)
			return
		}
		if j := slices.Index(q.pending, b); j >= 0 {
			q.pending = slices.Delete(q.pending, j, j+1)
		}
		return
	}
	if leader {
		b.leader = false
		close(b.wake)
		b.wake = make(chan struct{})
	}
}

// next ends a read that ended with err, made under ctx: it hands the
// queue to the oldest pending batch, or marks it idle, after failing every
// pending batch when err is one to shed.
func (q *Queue) next(ctx context.Context, err error) {
	if err == nil || ctx.Err() != nil || q.shed == nil || !q.shed(err) {
		err = nil
	}
	q.mu.Lock()
	q.nextLocked(err)
	q.mu.Unlock()
}

// nextLocked is next, with q.mu held: the pending batches fail with shed
// when it is not nil.
func (q *Queue) nextLocked(shed error) {
	if shed != nil {
		shed = fmt.Errorf("%w: %w", ErrShed, shed)
		for j, b := range q.pending {
			q.stats.shed.Add(uint64(len(b.keys)))
			b.err, b.sent = shed, true
			close(b.done)
			q.pending[j] = nil
		}
		q.pending = q.pending[:0]
	}
	if len(q.pending) == 0 {
		q.busy = false
		return
	}
	b := q.pending[0]
	n := copy(q.pending, q.pending[1:])
	q.pending[n] = nil // not kept alive by the array
	q.pending = q.pending[:n]
	b.granted = true
	close(b.turn)
}
