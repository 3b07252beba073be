package cacheaside

import (
	"context"
	"errors"
	"fmt"

	"github.com/cacheaside/cacheaside/internal/tagclock"
	"github.com/redis/go-redis/v9"
)

// Clear and the prefix's invalidation clock (internal/tagclock): Clear
// advances one key, every value records the clock its load began under,
// and every Redis read of values reads the clock in the same MGET, so a
// value older than the last Clear is a miss, whatever key it is under.

// ErrClearUnsupported is returned by Clear on a Redis Cluster client: the
// clock key lives in one slot, and the reads of values in other slots
// cannot read it in the same command yet.
var ErrClearUnsupported = errors.New("cacheaside: Clear is not supported on a Redis Cluster")

// Clear makes everything this Cache's prefix stored before the call a miss,
// on every process, in O(1) Redis work: one script on one key, the clock
// key <prefix>{tags}:clock. Once Clear has returned nil, no Get or
// GetMany started afterwards on any process returns a value loaded before
// the call from Redis, and this process's in-process cache holds none; a
// load in flight during the call writes nothing that is served afterwards
// (see the README's consistency notes for the one case in which its bytes
// are written, never to be read). The other processes drop their
// in-process copies when the feed's message reaches them, as after
// Invalidate. Other prefixes are untouched. The values stay in Redis until
// their TTL or until a load replaces them.
//
// When Redis cannot be written, Clear returns an error, which matches
// [ErrRedisUnavailable] when Redis was unavailable; this process then
// serves no Redis copy of the prefix and writes none until a later Clear
// succeeds (call it again). Clear is not queued for replay. On a Redis
// Cluster it returns [ErrClearUnsupported].
func (c *Cache[K, V]) Clear(ctx context.Context) error {
	if !c.tracker.add() {
		return ErrClosed
	}
	defer c.tracker.done()
	if c.clockKey == "" {
		return ErrClearUnsupported
	}
	c.dropAllLocal()
	c.clock.SetPending(true)
	var res string
	err := c.guard.Do(ctx, c.clockKey, func(ctx context.Context) error {
		var err error
		res, err = tagclock.Clear.Run(ctx, c.rdb, []string{c.clockKey}).Text()
		return err
	})
	c.dropAllLocal()
	if err != nil {
		c.redisError(err)
		return fmt.Errorf("cacheaside: clear: this process serves no Redis copy until a Clear succeeds: %w", redisUnavailable(ctx, err))
	}
	if err := c.clock.Observe([]byte(res)); err != nil {
		return fmt.Errorf("cacheaside: clear: %w", err)
	}
	c.clock.SetPending(false)
	if err := c.publish(ctx, tagclock.ClearMarker(c.cfg.prefix)); err != nil {
		c.redisError(err)
		return fmt.Errorf("cacheaside: clear: other processes' local copies may be stale: %w", redisUnavailable(ctx, err))
	}
	return nil
}

// dropAllLocal drops every in-process copy and detaches every flight from
// later callers, so that no Get started after a Clear joins a read or load
// from before it.
func (c *Cache[K, V]) dropAllLocal() {
	c.flights.ForgetAll()
	if c.l1 != nil {
		c.l1.InvalidateAll()
	}
}

// clockKeyFor returns the clock key the reads of rdb carry, or "" on a
// Redis Cluster (see ErrClearUnsupported).
func clockKeyFor(rdb redis.UniversalClient, prefix string) string {
	if _, ok := rdb.(*redis.ClusterClient); ok {
		return ""
	}
	return tagclock.Key(prefix)
}

// observeClock records the clock key's value read with values; an
// unreadable clock is counted in Stats.Corrupt.
func (c *Cache[K, V]) observeClock(raw []byte) {
	if c.clock.Observe(raw) != nil {
		c.stats.corrupt.Add(1)
	}
}

// current reports whether a value whose envelope carries clock may be
// served: loaded after the last Clear this process knows of.
func (c *Cache[K, V]) current(clock uint64) bool {
	return c.clockKey == "" || c.clock.Valid(clock)
}

// mayFill reports whether the result of a load that began at clock may be
// written: no Clear since. A process that knows of no Clear of the prefix
// sends nothing (a value it writes after a Clear it missed carries an
// older clock and is never served); else it reads the clock first.
func (c *Cache[K, V]) mayFill(ctx context.Context, clock uint64) bool {
	if c.clockKey == "" {
		return true
	}
	if c.clock.Clock() != 0 {
		var raw []byte
		err := c.guard.Do(ctx, c.clockKey, func(ctx context.Context) error {
			var err error
			raw, err = c.rdb.Get(ctx, c.clockKey).Bytes()
			if errors.Is(err, redis.Nil) {
				return nil
			}
			return err
		})
		if err != nil {
			c.redisError(err)
			return false
		}
		c.observeClock(raw)
	}
	return c.clock.Valid(clock)
}

// withClock returns vkeys with the clock key appended when reads carry it.
// It never writes into vkeys' backing array.
func (c *Cache[K, V]) withClock(vkeys []string) []string {
	if c.clockKey == "" {
		return vkeys
	}
	return append(vkeys[:len(vkeys):len(vkeys)], c.clockKey)
}

// mget is guard.MGet of vkeys, with the clock key read in the same MGET
// when reads carry it (never on a Cluster, where MGet splits by node).
func (c *Cache[K, V]) mget(ctx context.Context, vkeys []string) (out [][]byte, failed []error, err error) {
	out, failed, err = c.guard.MGet(ctx, c.withClock(vkeys))
	if c.clockKey == "" {
		return out, failed, err
	}
	if err == nil && (failed == nil || failed[len(vkeys)] == nil) {
		c.observeClock(out[len(vkeys)])
	}
	if failed != nil {
		failed = failed[:len(vkeys)]
	}
	return out[:len(vkeys)], failed, err
}
