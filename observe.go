package cacheaside

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cacheaside/cacheaside/internal/protocol"
)

// What a Cache lets monitoring read beyond [Stats]: how each Get was
// answered ([WithGetHook]), the breaker of each Redis node
// ([Cache.BreakerStates]) and where a key lives in Redis ([Cache.RedisKey]).
// The otel module and the inspect package are built on these.

// GetResult says how one [Cache.Get] was answered, as [WithGetHook]
// receives it.
type GetResult string

// The results of a Get. Every Get has exactly one: a stale value is
// ResultStale, not ResultHit, and a loader error is ResultError, not
// ResultMiss. An answer of [ErrNotFound] is a hit or a miss like a value.
const (
	ResultHit      GetResult = "hit"       // from Redis
	ResultLocalHit GetResult = "local_hit" // from the in-process cache
	ResultMiss     GetResult = "miss"      // from the loader
	ResultStale    GetResult = "stale"     // a value past its logical expiry (WithStaleIfError)
	ResultError    GetResult = "error"     // any error but ErrNotFound: the loader's, ctx's, ErrClosed
)

// resultOf classifies the answer r of one Get.
func resultOf[V any](r result[V]) GetResult {
	switch {
	case r.stale:
		return ResultStale
	case r.err != nil && !errors.Is(r.err, ErrNotFound):
		return ResultError
	case r.src == fromRedis:
		return ResultHit
	case r.src == fromLocal:
		return ResultLocalHit
	}
	return ResultMiss
}

// hookStart returns the time a Get began when a Get hook is set, and the
// zero time otherwise, so that a Cache without one does not read the clock.
func (c *Cache[K, V]) hookStart() time.Time {
	if c.cfg.getHook == nil {
		return time.Time{}
	}
	return time.Now()
}

// observe runs the Get hook, if any, for one Get begun at start, recovering
// a panic in it: monitoring must not fail a Get.
func (c *Cache[K, V]) observe(ctx context.Context, start time.Time, r result[V]) {
	hook := c.cfg.getHook
	if hook == nil {
		return
	}
	took := time.Since(start)
	defer func() {
		if p := recover(); p != nil && c.logger != nil {
			c.logger.Error("cacheaside: get hook panicked", "panic", fmt.Sprint(p))
		}
	}()
	hook(ctx, resultOf(r), took)
}

// BreakerStates returns the state of the circuit breaker of each Redis node
// the Cache has called, by node address: one entry on a Redis Cluster per
// primary it has sent keys to, and, on a single server, a Sentinel primary
// or a Cluster client that has not loaded its slot map yet, the entry ""
// (the same names as [BreakerChange].Node). With the breaker disabled
// ([WithBreaker](0, …)) it returns {"": BreakerDisabled}. [Stats].Breaker is
// the most open of these states.
func (c *Cache[K, V]) BreakerStates() map[string]BreakerState {
	states := c.guard.States()
	out := make(map[string]BreakerState, len(states))
	for node, s := range states {
		out[node] = breakerState(s)
	}
	return out
}

// RedisKey returns the Redis key under which the Cache stores the value of
// key. The fill lock and the generation of the key live beside it, at
// RedisKey(key)+":lock" and RedisKey(key)+":gen" (see the key layout in
// lock.go). It is meant for debugging tools, such as the inspect package;
// the layout may change between releases.
func (c *Cache[K, V]) RedisKey(key K) string {
	return protocol.ValueKey(c.cfg.prefix, c.encode(key))
}

// TypeFingerprint returns the fingerprint of the Cache's value type and
// codec that every entry it writes carries (see "Keys in Redis" in the
// package doc): an entry with another fingerprint is read as a miss. It is
// meant for debugging tools, such as the inspect package, which shows
// whether a stored entry's matches.
func (c *Cache[K, V]) TypeFingerprint() uint32 { return c.fingerprint }
