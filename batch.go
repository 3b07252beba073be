package cacheaside

import (
	"context"
	"fmt"
	"time"

	"github.com/cacheaside/cacheaside/internal/protocol"
)

// The fill protocol for a batch of keys, as GetMany and Warm run it: the
// same scripts and arguments as for one key (internal/protocol), sent in
// one pipeline per node, and the same settle for each key's fill.

// acquireBatch takes the fill locks of the items idx, in one pipeline
// per node (protocol.Locker.AcquireBatch). It answers items whose value
// appeared, and returns the items this call now holds the lock of, those
// it must leave to the single-key path, and those whose node could not be
// reached (down: load them without a lock and do not write them).
func (c *Cache[K, V]) acquireBatch(ctx context.Context, items []pendingKey[K, V], idx []int, results []result[V], leases []protocol.Lease) (locked, rest, down []int) {
	if len(idx) == 0 {
		return nil, nil, nil
	}
	vkeys := make([]string, len(items))
	force := make([]bool, len(items))
	for i := range items {
		vkeys[i], force[i] = items[i].vkey, items[i].unreadable
	}
	m := c.replay.Mark()
	out := c.lock.AcquireBatch(ctx, vkeys, force, idx)
	for _, i := range idx {
		a := out[i]
		switch {
		case a.Down:
			down = append(down, i)
		case a.Err != nil:
			rest = append(rest, i)
		case a.State == protocol.StateValue:
			switch r, _, kind := c.classify(vkeys[i], m, []byte(a.Raw), nil); kind {
			case readHit, readStale:
				results[i] = r
			case readFault:
				down = append(down, i) // its invalidation is pending (replay.go)
			default:
				rest = append(rest, i)
			}
		case a.State == protocol.StateAcquired:
			c.stats.lockAcquired.Add(1)
			leases[i] = a.Lease
			locked = append(locked, i)
		default:
			rest = append(rest, i) // someone else is loading it: wait for them
		}
	}
	return locked, rest, down
}

// loadBatch calls the batch loader once for the items idx and fills them
// in one pipeline per node. It returns the items whose fill hit a conflict.
// stored, if not nil, is set for the items written to Redis.
func (c *Cache[K, V]) loadBatch(ctx context.Context, batch BatchLoadFunc[K, V], items []pendingKey[K, V], idx []int, results []result[V], leases []protocol.Lease, epoch uint64, stored []bool) (conflicts []int) {
	if len(idx) == 0 {
		return nil
	}
	keys := make([]K, len(idx))
	for j, i := range idx {
		keys[j] = items[i].key
	}
	var held []protocol.Held
	for _, i := range idx {
		held = append(held, protocol.HeldBy(leases[i], items[i].vkey)...)
	}
	stop := c.keepAlive(held)
	clock := c.loadClock(ctx) // before the load: see clear.go
	var vals map[K]V
	took, late, scope, err := c.runLoader(ctx, func(ctx context.Context) (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = &PanicError{Value: p, Stack: stack()}
			}
		}()
		vals, err = batch(ctx, keys)
		return err
	})
	stop()
	type write struct {
		i   int
		ttl time.Duration
	}
	var writes []write
	var fills []protocol.BatchFill
	for _, i := range idx {
		ld := loaded[V]{err: err, took: took, late: late, ttl: scope.ttl, skip: scope.skip || scope.tags.bad, clock: clock, tags: scope.tags.enc}
		if err == nil {
			v, ok := vals[items[i].key]
			if ok {
				ld.val = v
			} else {
				ld.err = fmt.Errorf("key %v: %w", items[i].key, ErrNotFound)
			}
		}
		results[i] = result[V]{val: ld.val, err: ld.err, src: fromLoad}
		env, wttl, negative, ok := c.prepare(ld)
		if !ok || !leases[i].Known() {
			c.unfilled(ctx, protocol.KeysFor(items[i].vkey), leases[i], results[i], ok, epoch)
			continue
		}
		writes = append(writes, write{i, wttl})
		fills = append(fills, protocol.BatchFill{VKey: items[i].vkey, Lease: leases[i], Env: env, PX: c.physical(wttl, negative), Negative: negative})
	}
	if len(writes) == 0 {
		return nil
	}
	var keep time.Duration
	for _, f := range fills {
		keep = max(keep, f.PX)
	}
	may, err := c.mayFill(ctx, clock, scope.tags.enc, keep)
	if err != nil {
		// Redis failed: as for loads without the lock (fill.go's unfilled).
		c.redisError(err)
		for _, w := range writes {
			c.unfilled(ctx, protocol.KeysFor(items[w.i].vkey), leases[w.i], results[w.i], true, epoch)
		}
		return nil
	}
	if !may {
		// A Clear came after the load began: its results go to no one.
		for _, w := range writes {
			c.giveBack(ctx, protocol.KeysFor(items[w.i].vkey), leases[w.i], nil)
			c.stats.fillConflicts.Add(1)
			conflicts = append(conflicts, w.i)
		}
		return conflicts
	}
	sent := time.Now() // L1 copies must not outlive the Redis entries
	out := c.lock.FillBatch(ctx, fills)
	for j, w := range writes {
		conflict, ok := c.settle(items[w.i].vkey, results[w.i], sent.Add(w.ttl), out[j].Res, out[j].Err, epoch)
		if conflict {
			conflicts = append(conflicts, w.i)
		} else if ok && stored != nil {
			stored[w.i] = true
		}
	}
	return conflicts
}
