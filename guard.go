package cacheaside

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/cacheaside/cacheaside/internal/redisguard"
	"github.com/redis/go-redis/v9"
)

// The guard stands between the cache and every Redis call it makes
// (internal/redisguard): a time budget per call ([WithRedisTimeout]) that
// holds whatever the client's own settings, and a circuit breaker per
// node ([WithBreaker]) that stops calling Redis after consecutive
// failures, so that a dead or frozen Redis costs Get microseconds, not
// seconds. A call that a busy process or pool held up while its node
// answered others is slow, not failed: it is waited for, up to the lock
// wait. This file builds the guard from the config and reports its
// breakers' changes.

// BreakerState is the state of the circuit breaker around Redis.
type BreakerState string

// The states of the circuit breaker.
const (
	BreakerClosed   BreakerState = "closed"    // Redis is called
	BreakerOpen     BreakerState = "open"      // Redis is skipped; Gets go to the loader
	BreakerHalfOpen BreakerState = "half-open" // one probe call is let through
	BreakerDisabled BreakerState = "disabled"  // WithBreaker(0, …)
)

// BreakerChange is one state change of a circuit breaker around Redis,
// as [WithBreakerHook] receives it.
type BreakerChange struct {
	// Node is the address of the Redis Cluster primary whose breaker
	// changed; "" for the breaker of a single server or Sentinel primary,
	// or of a Cluster client that has not loaded its slot map yet.
	Node     string
	From, To BreakerState
}

// breakerState is the public name of a guard state.
func breakerState(s redisguard.State) BreakerState {
	switch s {
	case redisguard.Open:
		return BreakerOpen
	case redisguard.HalfOpen:
		return BreakerHalfOpen
	case redisguard.Disabled:
		return BreakerDisabled
	}
	return BreakerClosed
}

// newGuard returns the guard of a Cache over rdb (the client given to New),
// the client its calls go through (rdb, or its timeout clone with
// WithTimeoutClone) and the function that lets go of it. Caches on the same
// rdb whose guard settings match share one guard (redisguard.Acquire): the
// settings are WithRedisTimeout, the lock wait or lock TTL (slowLimit),
// WithCircuitBreaker's failures and cooldown, WithMaxAbandoned and
// WithTimeoutClone (see Stats.Breaker). Each Cache
// subscribes its own logger, hook and onChange to the shared breakers.
func newGuard(cfg *config, rdb redis.UniversalClient, onChange func(from, to BreakerState)) (*redisguard.Guard, redis.UniversalClient, func()) {
	inline, pool := redisguard.Traits(rdb)
	clone, dials := false, rdb // a clone dials through rdb's pool and hooks
	if cl, ok := rdb.(*redis.Client); ok && !inline && cfg.timeoutClone {
		// Socket deadlines of the Redis timeout, on the same pool: the
		// budget then holds without a goroutine per call.
		rdb, inline, clone = cl.WithTimeout(cfg.redisTTL), true, true
	}
	g, release := redisguard.Acquire(redisguard.Config{
		Client:          rdb,
		Dials:           dials,
		Budget:          cfg.redisTTL,
		Limit:           slowLimit(*cfg),
		BreakerFailures: uint32(cfg.breakerFailures), // validated: at most MaxUint32
		BreakerCooldown: cfg.breakerCooldown,
		MaxAbandoned:    cfg.maxAbandoned,
		Inline:          inline,
		Clone:           clone,
		PoolSize:        pool,
		Panicked:        func(p any) error { return &PanicError{Value: p, Stack: stack()} },
	})
	logger, hook := cfg.logger, cfg.breakerHook
	unsubscribe := g.Subscribe(func(node string, from, to redisguard.State) {
		f, t := breakerState(from), breakerState(to)
		logBreaker(logger, node, f, t)
		onChange(f, t)
		if hook != nil {
			callHook(hook, BreakerChange{Node: node, From: f, To: t}, logger)
		}
	})
	return g, g.Client(), func() { unsubscribe(); release() }
}

// logBreaker logs a breaker's state change: a warning when it opens.
func logBreaker(logger *slog.Logger, node string, from, to BreakerState) {
	if logger == nil {
		return
	}
	level := slog.LevelInfo
	if to == BreakerOpen {
		level = slog.LevelWarn
	}
	attrs := []any{"from", string(from), "to", string(to)}
	if node != "" {
		attrs = append(attrs, "node", node)
	}
	logger.Log(context.Background(), level, "cacheaside: redis circuit breaker changed state", attrs...)
}

// callHook runs the user's breaker hook, recovering a panic in it: a
// breaker change happens inside some Get, which must not crash.
func callHook(hook func(BreakerChange), ch BreakerChange, logger *slog.Logger) {
	defer func() {
		if p := recover(); p != nil && logger != nil {
			logger.Error("cacheaside: breaker hook panicked", "panic", fmt.Sprint(p))
		}
	}()
	hook(ch)
}

// CircuitBreaker configures the circuit breaker around Redis (see
// [WithCircuitBreaker]). A zero field means its default.
type CircuitBreaker struct {
	// Failures is how many consecutive Redis calls must fail (as
	// [WithRedisTimeout] defines it) for the breaker to open. A negative
	// value disables the breaker. At most 2³²−1.
	//
	// Default (zero): 5.
	Failures int

	// Cooldown is how long an open breaker stays open before it lets one
	// call through as a probe. A non-zero cooldown must be positive.
	//
	// Default (zero): 500 milliseconds.
	Cooldown time.Duration

	// OnChange, if not nil, is called on every state change of a breaker,
	// for alerting or metrics beyond [Stats].Breaker and the log line of
	// [WithLogger]. It runs synchronously, while the breaker is locked: it
	// must return quickly and must not call the Cache. A panic in it is
	// recovered and logged.
	//
	// Default (nil): no hook.
	OnChange func(BreakerChange)
}
