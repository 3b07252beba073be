package cacheaside

import (
	"sync/atomic"
	"time"

	"github.com/cacheaside/cacheaside/internal/counter"
)

// Stats is a snapshot of a Cache's counters since New, and of its breaker
// state. Every counter only grows (InvalidationsPending, a gauge, is the
// exception); take two snapshots and subtract to get rates. The hit ratio is (Hits + LocalHits) / (Hits + LocalHits + Misses).
type Stats struct {
	Hits               uint64 // Gets answered from Redis (values and cached "not found")
	LocalHits          uint64 // Gets answered from the in-process cache
	Misses             uint64 // Gets answered by a load
	Loads              uint64 // loader calls (the auditor's are counted apart, in AuditChecks and AuditErrors)
	LoadErrors         uint64 // loader calls that returned an error other than ErrNotFound, or panicked
	Panics             uint64 // loader calls that panicked (also counted in LoadErrors)
	LockAcquired       uint64 // fill locks this process took
	LockWaits          uint64 // flights that found the lock taken and waited
	LockWaitTimeouts   uint64 // waits that ended without a value; the waiter then loaded by itself
	FillConflicts      uint64 // loads discarded because the key was invalidated or set meanwhile
	Corrupt            uint64 // Redis entries that could not be decoded, or were written by a cache of another value type or codec (treated as misses)
	RedisErrors        uint64 // Redis calls that failed, ran past the Redis timeout, or were skipped
	RedisSlow          uint64 // Redis calls past the Redis timeout while their node answered others: waited for, not failures (see WithRedisTimeout)
	RedisSkipped       uint64 // Redis calls not sent: breaker open or too many abandoned calls
	Abandoned          uint64 // Redis calls abandoned at the Redis timeout
	BreakerOpens       uint64 // times the circuit breaker opened
	Warmed             uint64 // keys loaded and written by warm-ups
	WarmUps            uint64 // warm-ups run (by Warm or automatically)
	RestartsDetected   uint64 // empty Redis restarts this process detected and warmed after
	EarlyRefreshes     uint64 // background refreshes this process ran (WithEarlyRefresh)
	RefreshesSkipped   uint64 // early refreshes due but not started: all 4 refresh slots were busy (WithEarlyRefresh)
	LocalInvalidations uint64 // invalidation messages from other processes applied to L1
	LocalResumes       uint64 // dropped subscriptions after which L1 was trusted again: what was missed was replayed from Redis
	LocalFeedBroken    uint64 // invalidation messages published without their stream, whose key holds another type (logged at error level): a dropped subscriber then distrusts its L1
	StaleServed        uint64 // Gets answered with a value past its logical expiry (WithServeStale)

	// Invalidations that Set and Invalidate could not apply in Redis and
	// queued for replay (see ErrQueued), counted per key.
	InvalidationsQueued   uint64 // keys queued (a key queued again while pending counts again)
	InvalidationsReplayed uint64 // keys whose queued invalidation was applied in Redis
	InvalidationsDropped  uint64 // keys dropped unapplied past the queue's bound of 10,000 (logged at error level): other processes may serve their old values until the TTL
	InvalidationsPending  uint64 // keys queued now: a gauge, the one field that also falls

	// The consistency auditor's findings (WithAudit): sampled Redis hits
	// loaded again in the background and compared with what they returned.
	// AuditStale / AuditChecks is the share of sampled hits that were stale.
	AuditChecks      uint64        // sampled hits compared with a fresh load
	AuditStale       uint64        // checks whose cached value differed from the fresh load (one side "not found" included)
	AuditDropped     uint64        // sampled hits not audited: past the rate cap of 10 loads a second, the queue of 16, or no free load slot
	AuditErrors      uint64        // audit loads that failed, panicked or timed out, comparisons that panicked, and Redis re-reads of a differing entry that failed: not counted as checks
	AuditOldestStale time.Duration // the age of the oldest stale value found: time since its entry was stored (the load's end); values written before v0.3 have no known age

	Breaker BreakerState // the circuit breaker's current state; on a Cluster the most open of the nodes' breakers

	// RedisSlow, RedisSkipped, Abandoned, BreakerOpens and Breaker are the
	// Redis guard's (budget and breakers), not the Cache's alone: Caches
	// built on the same client (the one given to New, by identity) with
	// the same WithRedisTimeout, WithCircuitBreaker failures and
	// cooldown, WithFillLock TTL and wait (which bound a slow call's
	// wait), WithTimeoutClone and WithMaxAbandoned share one guard, so
	// for each of them these describe the calls of all of them together:
	// they are per client and settings. Every other field is the Cache's
	// own.
}

// counters are the live, atomically updated form of Stats, but for the
// guard's counts (redisguard.Counts), which Stats adds. The counts every
// Get adds to are striped (internal/counter): one atomic word added to by
// every core in turn costs a hit in the L1 more than its otter Get.
type counters struct {
	hits, localHits, misses                                                    counter.Counter
	loads, loadErrors, panics                                                  atomic.Uint64
	lockAcquired, lockWaits, lockWaitTimeouts                                  atomic.Uint64
	fillConflicts, corrupt                                                     atomic.Uint64
	redisErrors                                                                atomic.Uint64
	warmed, warmUps, restarts, earlyRefreshes, localInvalidations, staleServed atomic.Uint64
	refreshesSkipped, localResumes, feedBroken                                 atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Hits:               c.hits.Load(),
		LocalHits:          c.localHits.Load(),
		Misses:             c.misses.Load(),
		Loads:              c.loads.Load(),
		LoadErrors:         c.loadErrors.Load(),
		Panics:             c.panics.Load(),
		LockAcquired:       c.lockAcquired.Load(),
		LockWaits:          c.lockWaits.Load(),
		LockWaitTimeouts:   c.lockWaitTimeouts.Load(),
		FillConflicts:      c.fillConflicts.Load(),
		Corrupt:            c.corrupt.Load(),
		RedisErrors:        c.redisErrors.Load(),
		Warmed:             c.warmed.Load(),
		WarmUps:            c.warmUps.Load(),
		RestartsDetected:   c.restarts.Load(),
		EarlyRefreshes:     c.earlyRefreshes.Load(),
		RefreshesSkipped:   c.refreshesSkipped.Load(),
		LocalInvalidations: c.localInvalidations.Load(),
		LocalResumes:       c.localResumes.Load(),
		LocalFeedBroken:    c.feedBroken.Load(),
		StaleServed:        c.staleServed.Load(),
	}
}
