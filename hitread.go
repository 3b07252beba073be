package cacheaside

import (
	"context"
	"errors"

	"github.com/cacheaside/cacheaside/internal/protocol"
	"github.com/cacheaside/cacheaside/internal/readbatch"
	"github.com/redis/go-redis/v9"
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
	raw, err := c.reads.For(c.guard.cbs.node(vkey)).Get(ctx, vkey)
	if err != nil && errors.Is(err, readbatch.ErrShed) {
		c.failedReads(vkey, err, 1)
	}
	return raw, err
}

// readMany reads vkeys, all on one node, in one call through the guard;
// vals[i] is nil for a missing key, or one that holds another Redis type
// (MGET answers nil for it; the miss path's script then finds it
// unreadable and replaces it).
func (c *Cache[K, V]) readMany(ctx context.Context, vkeys []string, vals [][]byte) error {
	err := c.guard.do(ctx, vkeys[0], func(ctx context.Context) error {
		return c.mgetNode(ctx, vkeys, vals)
	})
	if err != nil {
		c.failedReads(vkeys[0], err, len(vkeys)-1) // the call itself counted once
	}
	return err
}

// failedReads counts n reads of key's node that failed with err, without a
// call of their own (a batch's other keys, or keys shed), as failures of
// the node's breaker, when err is one: the breaker opens after as many
// failed Gets as without batching, not after as many failed round trips,
// which would let several times more Gets pay the budget first.
func (c *Cache[K, V]) failedReads(key string, err error, n int) {
	cb := c.guard.cbs.forKey(key).cb
	if cb == nil || !isOutage(err) || errors.Is(err, errSkipped) {
		return
	}
	for range n {
		_, _ = cb.Execute(func() (struct{}, error) { return struct{}{}, err })
	}
}

// mgetNode reads vkeys, all on one node, in one round trip: one MGET, or
// on a Cluster one pipeline of an MGET per slot.
func (c *Cache[K, V]) mgetNode(ctx context.Context, vkeys []string, vals [][]byte) error {
	if c.guard.cbs.cluster == nil {
		res, err := c.rdb.MGet(ctx, vkeys...).Result()
		if err != nil {
			return err
		}
		fillRaw(vals, nil, res)
		return nil
	}
	bySlot := make(map[uint16][]int)
	for i, k := range vkeys {
		s := protocol.Slot(k)
		bySlot[s] = append(bySlot[s], i)
	}
	cmds := make([]*redis.SliceCmd, 0, len(bySlot))
	idxs := make([][]int, 0, len(bySlot))
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, idx := range bySlot {
			ks := make([]string, len(idx))
			for j, i := range idx {
				ks[j] = vkeys[i]
			}
			cmds = append(cmds, p.MGet(ctx, ks...))
			idxs = append(idxs, idx)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for g, cmd := range cmds {
		fillRaw(vals, idxs[g], cmd.Val())
	}
	return nil
}

// shedRead reports whether a read that failed with err found its node
// silent (no reply within the budget) or skipped it (a breaker that is
// open), so that the batches waiting behind it fail too rather than wait
// a budget of their own. A connection error fails fast: the batch is
// sent, and its failure counts for the breaker. A slow call (errSlow) is
// not a failing node.
func shedRead(err error) bool {
	if errors.Is(err, errSlow) {
		return false
	}
	return errors.Is(err, errIncomplete) || isTimeout(err)
}
