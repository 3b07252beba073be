package cacheaside

import "sync/atomic"

// Stats is a snapshot of a Cache's counters since New. Every field only
// grows; take two snapshots and subtract to get rates.
type Stats struct {
	Hits             uint64 // Gets answered from Redis (values and cached "not found")
	Misses           uint64 // Gets that found nothing usable in Redis
	Loads            uint64 // loader calls
	LoadErrors       uint64 // loader calls that returned an error other than ErrNotFound, or panicked
	Panics           uint64 // loader calls that panicked (also counted in LoadErrors)
	LockAcquired     uint64 // fill locks this process took
	LockWaits        uint64 // flights that found the lock taken and waited
	LockWaitTimeouts uint64 // waits that ended without a value; the waiter then loaded by itself
	FillConflicts    uint64 // loads discarded because the key was invalidated or set meanwhile
	Corrupt          uint64 // Redis entries that could not be decoded (treated as misses)
	RedisErrors      uint64 // Redis calls that failed or ran past the Redis timeout
}

// counters are the live, atomically updated form of Stats.
type counters struct {
	hits, misses, loads, loadErrors, panics   atomic.Uint64
	lockAcquired, lockWaits, lockWaitTimeouts atomic.Uint64
	fillConflicts, corrupt, redisErrors       atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Hits:             c.hits.Load(),
		Misses:           c.misses.Load(),
		Loads:            c.loads.Load(),
		LoadErrors:       c.loadErrors.Load(),
		Panics:           c.panics.Load(),
		LockAcquired:     c.lockAcquired.Load(),
		LockWaits:        c.lockWaits.Load(),
		LockWaitTimeouts: c.lockWaitTimeouts.Load(),
		FillConflicts:    c.fillConflicts.Load(),
		Corrupt:          c.corrupt.Load(),
		RedisErrors:      c.redisErrors.Load(),
	}
}
