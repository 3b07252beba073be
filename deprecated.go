package cacheaside

import "time"

// The v0.1 options that v0.2 merged into groups or replaced by sound
// defaults. Each keeps its v0.1 signature and meaning for one release;
// CHANGELOG.md says what to use instead.

// WithLockTTL sets how long the fill lock outlives its holder.
//
// Deprecated: use [WithFillLock] with [FillLock].TTL.
func WithLockTTL(d time.Duration) Option {
	return func(c *config) { c.lockTTL = d }
}

// WithLockWait bounds how long a Get that found the fill lock taken waits
// for the holder's value. A negative d means no bound, zero means do not
// wait at all.
//
// Deprecated: use [WithFillLock] with [FillLock].Wait.
func WithLockWait(d time.Duration) Option {
	return func(c *config) { c.lockWait = d }
}

// WithBreaker sets the circuit breaker's failures and cooldown; failures
// = 0 disables the breaker.
//
// Deprecated: use [WithCircuitBreaker] (Failures < 0 disables it there).
func WithBreaker(failures int, cooldown time.Duration) Option {
	return func(c *config) { c.breakerFailures, c.breakerCooldown = failures, cooldown }
}

// WithBreakerHook sets a function called on every state change of a
// circuit breaker.
//
// Deprecated: use [WithCircuitBreaker] with [CircuitBreaker].OnChange.
func WithBreakerHook(fn func(BreakerChange)) Option {
	return func(c *config) { c.breakerHook = fn }
}

// WithLocalCache adds a local cache of up to size entries, each kept at
// most ttl, read only while Redis is unavailable unless [WithLocalFirst]
// is on (its v0.1 meaning). size = 0 disables it.
//
// Deprecated: use [WithL1], which reads the local cache first by default
// ([L1].OutageOnly for the v0.1 behaviour).
func WithLocalCache(size int, ttl time.Duration) Option {
	return func(c *config) {
		c.localSize, c.localTTL = size, ttl
		if !c.localFirstSet {
			c.localFirst = false
		}
	}
}

// WithLocalFirst makes Get read the local cache of [WithLocalCache] before
// Redis on every call.
//
// Deprecated: use [WithL1]: reading first is its default.
func WithLocalFirst(on bool) Option {
	return func(c *config) { c.localFirst, c.localFirstSet = on, true }
}

// WithLocalPrefill keeps every process's local cache filled with the
// warm-up keys.
//
// Deprecated: use [WithL1] with [L1].Prefill.
func WithLocalPrefill(on bool) Option {
	return func(c *config) { c.localPrefill = on }
}

// WithStaleIfError keeps each value in Redis for maxStale past its
// logical expiry, to serve it when reloading fails.
//
// Deprecated: use [WithServeStale] with [ServeStale].MaxStale.
func WithStaleIfError(maxStale time.Duration) Option {
	return func(c *config) { c.maxStale = maxStale }
}

// WithSoftTimeout bounds how long a Get waits for the reload of a value
// it could serve stale.
//
// Deprecated: use [WithServeStale] with [ServeStale].SoftTimeout.
func WithSoftTimeout(d time.Duration) Option {
	return func(c *config) { c.softTimeout = d }
}

// WithTimeoutClone sends the cache's calls through rdb.WithTimeout(the
// Redis timeout) on a *redis.Client built without ContextTimeoutEnabled.
//
// Deprecated: build the client with ContextTimeoutEnabled: true instead
// (see [WithRedisTimeout]); the clone hid the client's hooks from the
// cache's commands.
func WithTimeoutClone(on bool) Option {
	return func(c *config) { c.timeoutClone = on }
}

// WithMaxAbandoned bounds how many Redis calls may run on goroutines of
// their own at once.
//
// Deprecated: the default of 64 holds; build the client with
// ContextTimeoutEnabled: true so that calls need no goroutine of their own.
func WithMaxAbandoned(n int) Option {
	return func(c *config) { c.maxAbandoned = n }
}

// WithMaxRefills bounds how many times one Get reloads and refills a
// value whose conditional fill failed.
//
// Deprecated: the default of 2 holds; an internal bound.
func WithMaxRefills(n int) Option {
	return func(c *config) { c.maxRefills = n }
}

// WithWarmupConcurrency bounds how many keys a warm-up loads at once.
//
// Deprecated: the default of 8 holds.
func WithWarmupConcurrency(n int) Option {
	return func(c *config) { c.warmConcurrency = n }
}

// WithRestartCheck sets how often the cache checks whether Redis
// restarted empty; zero disables automatic warm-up.
//
// Deprecated: the default of 1 second holds.
func WithRestartCheck(interval time.Duration) Option {
	return func(c *config) { c.restartCheck = interval }
}

// WithWaiterContexts turned on the recording of waiters' contexts for
// [Waiters]. v0.2 records them by default; false still turns it off.
//
// Deprecated: no longer needed.
func WithWaiterContexts(on bool) Option {
	return func(c *config) { c.waiterCtxs = on }
}
