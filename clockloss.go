package cacheaside

import (
	"bytes"
	"context"
	"fmt"

	"github.com/cacheaside/cacheaside/internal/tagclock"
)

// A lost clock (internal/tagclock, lost.go): a read that finds the clock
// key, or on a Cluster the replica it carried, missing does not take it
// for "never cleared". It recreates it before the values read with it are
// judged, so that they are judged, and the loads that replace them begin,
// under the recreated clock: a value stored before the loss is a miss
// once, and its reload is current for every process.

// observeClock records the clock read with values from key (the clock key
// or a replica). A missing one is recreated first (recreateClock), and so
// is one below the largest clock this process knows (set back); when that
// fails, no value is served until a read finds the clock. An unreadable
// clock is counted in Stats.Corrupt. A clock found missing, set back or
// unreadable ends the clock's lease (tagclock.Lease); ok reports a clock
// read as it was and recorded, which a hit read may extend the lease with.
func (c *Cache[K, V]) observeClock(key string, raw []byte) (ok bool) {
	clock, cleared, ok, err := c.memo.Parse(raw)
	// Missing, or set back below the largest clock this process knows (a
	// restart from an older snapshot, a failover to a lagging replica: the
	// Clears made since are lost). Either is moved past the clock known,
	// with its last Clear there (tagclock.Ensure, which leaves the key as
	// it is if it moved on since this read: a read answered after a later
	// one, or a replica not yet raised by a Clear in progress, costs that
	// one script).
	if raw == nil || ok && clock < c.clock.Clock() {
		// The recreation may be one that another reader began before
		// this read was sent (lostKeys shares it): what it returns says
		// nothing of the time this read went out, so it ends the lease
		// rather than extend it, and the next read carries the clock.
		c.lease.Drop(tagclock.Now())
		if raw, err = c.recreateClock(key); err != nil {
			c.clock.Lost()
			return false
		}
		clock, cleared, ok, err = tagclock.Parse(raw)
		if c.clock.Record(clock, cleared, ok, err) != nil {
			c.stats.corrupt.Add(1)
		}
		return false
	}
	if c.clock.Record(clock, cleared, ok, err) != nil {
		c.stats.corrupt.Add(1)
		c.lease.Drop(tagclock.Now())
		return false
	}
	return ok
}

// syncClock reads the prefix's clock, recreating it if it is lost, for a
// write or loads that no read of values came before (Set, Warm), so that
// they are stamped with the clock as of now. Failing, Redis most likely
// fails the writes too.
func (c *Cache[K, V]) syncClock(ctx context.Context) {
	if c.clockKey != "" {
		_, _ = c.fetchVersions(ctx, nil)
	}
}

// loadClock returns the clock a load that begins now records in its
// value. A process that knows none yet (its reads could not recreate a
// lost clock, or Warm's read failed) reads it first, recreating it if
// lost: a value loaded at clock 0 would never be served once the clock
// exists, and its key would load twice.
func (c *Cache[K, V]) loadClock(ctx context.Context) uint64 {
	if c.clock.Clock() == 0 {
		c.syncClock(ctx)
	}
	return c.clock.Clock()
}

// recreateClock recreates the missing clock key or replica key and
// returns its value; the concurrent readers that found the same key
// missing share one recreation. It runs under the Cache's lifetime, like
// the tag lookups of classify, each call under the guard.
func (c *Cache[K, V]) recreateClock(key string) ([]byte, error) {
	v, err, _ := c.lostKeys.Do(key, func() (any, error) {
		if key == c.clockKey {
			return c.ensureClock(c.life)
		}
		return c.recreateReplica(c.life, key)
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

// ensureClock returns the clock key's value, recreating it when it is
// missing (tagclock.Ensure) at a clock above every clock this process
// knows.
func (c *Cache[K, V]) ensureClock(ctx context.Context) ([]byte, error) {
	var raw []byte
	err := c.guard.Do(ctx, c.clockKey, func(ctx context.Context) error {
		s, err := tagclock.Ensure.Run(ctx, c.rdb, []string{c.clockKey}, c.clock.Clock()).Text()
		raw = []byte(s)
		return err
	})
	if err != nil {
		c.redisError(err)
		return nil, err
	}
	return raw, nil
}

// recreateReplica raises the missing Cluster replica key to the clock
// key's value (itself recreated if lost) and returns that value. It reads
// the clock key again after the raise and raises the replica again if it
// moved: a Clear that wrote the clock key before that second read is
// seen by it, and one that wrote it after raises the replica itself after
// this raise (Clear raises every replica after writing the clock key), so
// a raise from a value read before a Clear never leaves the replica
// behind it.
func (c *Cache[K, V]) recreateReplica(ctx context.Context, key string) ([]byte, error) {
	first, err := c.ensureClock(ctx)
	if err == nil {
		err = c.raiseReplica(ctx, key, first)
	}
	if err != nil {
		return nil, err
	}
	c.observeClock(c.clockKey, first)
	second, err := c.ensureClock(ctx)
	if err == nil && !bytes.Equal(first, second) {
		err = c.raiseReplica(ctx, key, second)
	}
	if err != nil {
		return nil, err
	}
	return second, nil
}

// raiseReplica raises the replica key to the clock key's value raw.
func (c *Cache[K, V]) raiseReplica(ctx context.Context, key string, raw []byte) error {
	clock, cleared, _, err := tagclock.Parse(raw)
	if err != nil {
		return fmt.Errorf("cacheaside: clock replica: %w", err)
	}
	err = c.guard.Do(ctx, key, func(ctx context.Context) error {
		return tagclock.Raise.Run(ctx, c.rdb, []string{key}, clock, cleared).Err()
	})
	if err != nil {
		c.redisError(err)
	}
	return err
}
