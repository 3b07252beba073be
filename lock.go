package cacheaside

import (
	"context"
	"errors"

	"github.com/cacheaside/cacheaside/internal/protocol"
)

// The fill lock. On a miss one process of the fleet takes the key's lock
// (SET NX PX, with a token unique to it), loads, and fills conditionally;
// the others wait for its value, taking the lock over when a dead
// holder's lock expires. While its load runs the holder keeps the lock
// alive (heartbeat.go), so the lock never expires under a live load; a
// holder that dies stops extending it and it expires within the lock TTL.
// A load that writes nothing gives the lock back at once (or holds it a
// while after a failed stale reload, to throttle the fleet's retries), and
// a lock whose call failed or was abandoned is given back past the guard,
// so that no key stays locked for a whole lock TTL.
//
// The lock is an efficiency mechanism: correctness rests on the generation
// fence every fill checks. Set and Invalidate replace the generation, and
// a generation Redis evicted never comes back, so a fill whose load began
// before any of them writes nothing.
//
// The scripts, the key layout, their arguments and the Redis I/O of every
// step (acquire, fill, hold, release, for one key and for a batch) are
// written once, in internal/protocol (protocol.Locker, whose calls go
// through the guard). This file builds the Locker and holds what only the
// Cache knows about it.

// newLocker builds the Cache's protocol.Locker.
func (c *Cache[K, V]) newLocker() *protocol.Locker {
	return protocol.NewLocker(protocol.LockerConfig{
		Client:      c.rdb,
		Guard:       c.guard,
		Params:      protocol.Params{LockTTL: c.cfg.lockTTL, GenTTL: generationTTL(c.cfg)},
		TokenPrefix: c.tokenPrefix,
		Go: func(fn func()) {
			c.tracker.spawn()
			go func() {
				defer c.tracker.done()
				fn()
			}()
		},
		Fault: c.redisError,
		Done:  c.life.Done(),
	})
}

// acquire takes the fill lock of ks, or finds the value (or the lock
// taken): protocol.Acquire in ModeForce when the value is unreadable.
func (c *Cache[K, V]) acquire(ctx context.Context, ks protocol.Keys, unreadable bool) (protocol.State, string, protocol.Lease, error) {
	mode := protocol.ModeNormal
	if unreadable {
		mode = protocol.ModeForce
	}
	return c.lock.Acquire(ctx, ks, mode, 0)
}

// giveBack returns the lock of l, if any, after a load that wrote
// nothing: it holds it for l.HoldOnError after a loader error, and
// releases it otherwise.
func (c *Cache[K, V]) giveBack(ctx context.Context, ks protocol.Keys, l protocol.Lease, loadErr error) {
	c.lock.GiveBack(ctx, ks, l, loadErr != nil && !errors.Is(loadErr, ErrNotFound))
}
