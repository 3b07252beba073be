package cacheaside

import (
	"context"
	"errors"
	"time"

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
		Acks:  protocol.Acks{Replicas: c.cfg.replicaAcks, Timeout: c.cfg.replicaWait},
		Nodes: protocol.ClientNodes(c.sub),
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

// FillLock configures the fill lock that a Get takes on a miss, so that
// one process of the fleet loads a key while the others wait for its
// value (see [WithFillLock]). A zero field means its default.
type FillLock struct {
	// TTL is how long the lock outlives its holder. The holder extends
	// the lock every third of this while its load runs (and while the
	// load waits for a slot, see [WithMaxConcurrentLoads]), so the lock
	// never expires under a live load however long the database takes; a
	// holder that dies or loses Redis stops extending it, and the lock
	// then expires within the TTL for another process to take over. Keep
	// it a few times longer than the Redis timeout, so that one slow
	// extension does not let the lock lapse. A non-zero TTL must be at
	// least 1ms.
	//
	// Default (zero): 3 seconds.
	TTL time.Duration

	// Wait bounds how long a Get that found the lock taken waits for the
	// holder's value before it loads the value itself (its value is then
	// written only if nothing invalidated the key meanwhile). Unbounded,
	// a Get waits as long as the holder keeps the lock alive, that is
	// while its load waits for a load slot and runs (up to the load
	// timeout), and takes the lock over once a dead holder's lock has
	// expired; the caller's context still bounds every Get. A bound
	// shorter than the loads of a slow database turns each of its loads
	// into several, one per waiting process.
	//
	// Default (zero or negative): no bound.
	Wait time.Duration
}
