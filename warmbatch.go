package cacheaside

import (
	"context"
	"errors"

	"github.com/cacheaside/cacheaside/internal/flight"
	"github.com/cacheaside/cacheaside/internal/l1"
	"github.com/cacheaside/cacheaside/internal/protocol"
)

// A warm-up of a Cache with a batch loader: one fill-lock
// acquire and one batch load per chunk of keys, each key's load its flight
// in this process, as warmKey's is for a single key.

// warmBatch warms keys with one batch load. As in warmKey, the load of
// each key whose lock it takes is the key's flight in this process: a key
// whose flight a Get or GetMany of this process leads is left to it, and
// one that comes during the load waits for the warm-up's result.
func (c *Cache[K, V]) warmBatch(ctx context.Context, batch BatchLoadFunc[K, V], keys []K, record func(K, bool, error)) {
	items := make([]pendingKey[K, V], len(keys))
	for i, k := range keys {
		items[i] = pendingKey[K, V]{key: k, vkey: protocol.ValueKey(c.cfg.prefix, c.encode(k))}
	}
	results := make([]result[V], len(items))
	leases := make([]protocol.Lease, len(items))
	marks := make([]l1.Stamp[V], len(items))
	for i := range items {
		marks[i] = c.localStamp(items[i].vkey) // see warmKey
	}
	locked, _, down := c.acquireBatch(ctx, items, indexes(len(items)), results, leases)
	stored := make([]bool, len(items))
	// The loads are their keys' flights: they run on a goroutine of the
	// Cache's, detached from ctx, so that a Get that joined one gets its
	// value when Warm is cancelled, and Warm returns at once.
	done := make(chan struct{})
	c.tracker.spawn()
	go func() {
		defer c.tracker.done()
		defer close(done)
		c.warmLocked(detach(ctx, c.life), batch, items, locked, marks, results, leases, stored)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		return // Warm's error says so; the loads go on for the Gets that joined
	}
	isDown := make(map[int]bool, len(down))
	for _, i := range down {
		isDown[i] = true
	}
	for i := range keys {
		err := results[i].err
		switch {
		case isDown[i]:
			err = errWarmRedis // its node could not be reached: not warmed
		case items[i].fl == nil || errors.Is(err, ErrNotFound):
			err = nil // present, filled by another process or a Get of this one, or not found
		}
		record(keys[i], stored[i], err)
	}
}

// warmLocked loads the items locked (whose fill lock the warm-up holds)
// with one batch load as the flights of their keys in this process, and
// fills them. A key whose flight is already in the air (a Get or GetMany
// of this process reads it or waits for this lock) gets its lock back and
// is not loaded: that flight loads it once the lock is free. Nor is one
// that a flight of this process wrote to L1 since marks[i] was taken,
// before the acquire (see loadedMeanwhile). The items
// this call leads have their flight set (fl); each is finished with its
// result, a PanicError after a panic.
func (c *Cache[K, V]) warmLocked(ctx context.Context, batch BatchLoadFunc[K, V], items []pendingKey[K, V], locked []int, marks []l1.Stamp[V], results []result[V], leases []protocol.Lease, stored []bool) {
	returned := false
	defer c.finishFlights(items, results, &returned)
	led := locked[:0:0]
	for _, i := range locked {
		fl, leader := c.flights.Join(ctx, items[i].vkey)
		if !leader {
			c.giveBack(ctx, protocol.KeysFor(items[i].vkey), leases[i], nil)
			continue
		}
		if c.loadedMeanwhile(ctx, fl, items[i].key, items[i].vkey, leases[i], marks[i]) {
			defer func() { // resolved as a Get's flight: see warmKey
				select {
				case <-fl.Done():
				case <-ctx.Done():
				}
			}()
			continue
		}
		c.flights.Hold(fl) // its waiters go with the load (Waiters)
		items[i].fl = fl
		led = append(led, i)
	}
	epoch := c.localEpoch()
	bctx := flight.WithWaiters(ctx, waitersOf(items, led...)...)
	conflicts := c.loadBatch(bctx, batch, items, led, results, leases, epoch, stored)
	// Invalidated during the load: those results go to no one, and the
	// Gets that joined get what a Get's flight gives them.
	c.resolveSingly(ctx, items, conflicts, results, epoch)
	returned = true
}
