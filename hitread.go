package cacheaside

import (
	"context"
	"errors"

	"github.com/cacheaside/cacheaside/internal/readbatch"
	"github.com/cacheaside/cacheaside/internal/redisguard"
	"github.com/cacheaside/cacheaside/internal/tagclock"
)

// The Redis read of a Get goes out with the reads of concurrent Gets of
// other keys on the same node (internal/readbatch): at once and alone, a
// plain GET, when no read of the node is in flight; else in the node's
// next batch, one MGET (a pipeline of MGETs, one per slot, on a Cluster
// node), sent as soon as the read in flight ends. A batch is one call
// through the guard, under its node's breaker and budget, like a lone
// read; a batch waiting behind a read that found its node failing fails
// with it, unsent. A Get never joins a batch already sent, so its read is
// sent after it began, as the consistency promise needs.

// readBatchMax bounds the keys of one batch: an MGET of 64 values of a
// few hundred bytes is one reply of tens of kilobytes, and 64 callers
// waiting on one node already make it a round trip of their own.
const readBatchMax = 64

// newReads returns the Cache's read queues, one per node.
func (c *Cache[K, V]) newReads() *readbatch.Group {
	return readbatch.NewGroup(c.read, c.readMany, readBatchMax, shedRead)
}

// readBatched is read, sent with the reads of concurrent Gets (see above).
func (c *Cache[K, V]) readBatched(ctx context.Context, vkey string) ([]byte, error) {
	raw, err := c.reads.For(c.guard.NodeOf(vkey)).Get(ctx, vkey)
	if errors.Is(err, readbatch.ErrShed) {
		c.guard.Failed(vkey, err, 1)
	}
	return raw, err
}

// readMany reads vkeys, all on one node, in one call through the guard,
// with the clock key unless the clock's lease is held (read.go's get);
// vals[i] is nil for a missing key, one that holds another Redis type
// (MGET answers nil for it) or an empty string (guard.MGetNode): the miss
// path's script then finds it unreadable and replaces it.
func (c *Cache[K, V]) readMany(ctx context.Context, vkeys []string, vals [][]byte) error {
	err := c.guard.Do(ctx, vkeys[0], func(ctx context.Context) error {
		now := tagclock.Now()
		if c.clockKey == "" || c.lease.Held(now) {
			return c.guard.MGetNode(ctx, vkeys, vals)
		}
		withClock := make([][]byte, len(vkeys)+1)
		keys := append(vkeys[:len(vkeys):len(vkeys)], c.readClockKey(vkeys[0]))
		if err := c.guard.MGetNode(ctx, keys, withClock); err != nil {
			return err
		}
		copy(vals, withClock)
		if c.observeClock(keys[len(vkeys)], withClock[len(vkeys)]) {
			c.lease.Extend(now)
		}
		return nil
	})
	if err != nil {
		c.guard.Failed(vkeys[0], err, len(vkeys)-1) // the call itself counted once
	}
	return err
}

// shedRead reports whether a read that failed with err found its node
// silent (no reply within the budget) or skipped it (a breaker that is
// open), so that the batches waiting behind it fail too rather than wait
// a budget of their own. A connection error fails fast: the batch is
// sent, and its failure counts for the breaker. A slow call (errSlow) is
// not a failing node.
func shedRead(err error) bool {
	if errors.Is(err, redisguard.ErrSlow) {
		return false
	}
	return errors.Is(err, redisguard.ErrIncomplete) || redisguard.IsTimeout(err)
}
