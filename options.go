package cacheaside

import (
	"context"
	"log/slog"
	"time"
)

// An Option configures a [Cache]. Options are applied in order and the last
// one wins. Options are not generic: those that need the key or value type
// infer it from their argument, and [New] reports a mismatch as an error.
type Option func(*config)

// config holds every knob of a Cache.
type config struct {
	ttl         time.Duration
	jitter      float64
	negativeTTL time.Duration
	prefix      string
	lockTTL     time.Duration
	lockWait    time.Duration
	loadTimeout time.Duration
	redisTTL    time.Duration // WithRedisTimeout
	maxRefills  int
	codec       Codec
	keyFunc     any // func(K) string, checked against K in New
	batchLoad   any // BatchLoadFunc[K, V], checked in New
	earlyBeta   float64
	maxStale    time.Duration
	softTimeout time.Duration
	logger      *slog.Logger

	breakerFailures int
	breakerCooldown time.Duration
	breakerHook     func(BreakerChange)
	getHook         func(context.Context, GetResult, time.Duration)
	maxAbandoned    int
	timeoutClone    bool
	maxLoads        int

	localSize    int
	localTTL     time.Duration
	localFirst   bool
	localPrefill bool
	waiterCtxs   bool

	warmKeys        any // []K
	warmFunc        any // func(context.Context) ([]K, error)
	warmConcurrency int
	restartCheck    time.Duration

	errs []error // problems found while applying options
}

// Defaults, in one place.
const (
	defaultTTL          = 10 * time.Minute
	defaultJitter       = 0.10
	defaultNegativeTTL  = 30 * time.Second
	defaultPrefix       = "ca:"
	defaultLockTTL      = 3 * time.Second
	defaultLockWait     = noLimit
	defaultLoadTimeout  = 30 * time.Second
	defaultMaxLoads     = 16
	defaultRedisTimeout = 100 * time.Millisecond
	defaultMaxRefills   = 2

	defaultBreakerFailures = 5
	defaultBreakerCooldown = 500 * time.Millisecond
	defaultMaxAbandoned    = 64
	defaultWarmConcurrency = 8
	defaultRestartCheck    = time.Second
	// noLimit is a lock wait without a bound of its own; any negative
	// lock wait means the same.
	noLimit = time.Duration(-1)
	// maxDuration bounds every duration option, so that jitter and derived
	// durations cannot overflow; nothing cached needs to live longer.
	maxDuration = 10 * 365 * 24 * time.Hour
)

func defaultConfig() config {
	return config{
		ttl:         defaultTTL,
		jitter:      defaultJitter,
		negativeTTL: defaultNegativeTTL,
		prefix:      defaultPrefix,
		lockTTL:     defaultLockTTL,
		lockWait:    defaultLockWait,
		loadTimeout: defaultLoadTimeout,
		redisTTL:    defaultRedisTimeout,
		maxRefills:  defaultMaxRefills,
		codec:       JSON{},

		breakerFailures: defaultBreakerFailures,
		breakerCooldown: defaultBreakerCooldown,
		maxAbandoned:    defaultMaxAbandoned,
		maxLoads:        defaultMaxLoads,
		warmConcurrency: defaultWarmConcurrency,
		restartCheck:    defaultRestartCheck,
	}
}

// WithTTL sets how long a loaded value lives in Redis before jitter is
// applied. It must be at least one millisecond; TTLs are stored in
// milliseconds and never rounded to seconds.
//
// Default: 10 minutes.
func WithTTL(d time.Duration) Option {
	return func(c *config) { c.ttl = d }
}

// WithJitter sets the fraction f by which each stored TTL is spread: every
// entry lives a uniformly chosen duration in [TTL·(1−f), TTL·(1+f)], so keys
// filled together do not expire together. Zero disables jitter; f must be
// in [0, 1).
//
// Default: 0.1.
func WithJitter(fraction float64) Option {
	return func(c *config) { c.jitter = fraction }
}

// WithNegativeTTL sets how long a "not found" answer (a loader error that
// wraps [ErrNotFound]) is remembered in Redis. Zero disables negative
// caching: every Get of a missing key calls the loader. The same jitter as
// for values applies.
//
// Default: 30 seconds.
func WithNegativeTTL(d time.Duration) Option {
	return func(c *config) { c.negativeTTL = d }
}

// WithPrefix sets the string put in front of every Redis key the cache
// writes (see the package documentation for the key layout). It may be
// empty but must not contain '{' or '}', which Redis Cluster reads as a hash
// tag.
//
// Default: "ca:".
func WithPrefix(p string) Option {
	return func(c *config) { c.prefix = p }
}

// WithLockTTL sets how long the fill lock taken on a miss outlives its
// holder. The holder extends the lock every third of this while its load
// runs (and while the load waits for a slot, see [WithMaxConcurrentLoads]),
// so the lock never expires under a live load however long the database
// takes; a holder that dies or loses Redis stops extending it, and the
// lock then expires within the lock TTL for another process to take over.
// Keep it a few times longer than the Redis timeout, so that one slow
// extension does not let the lock lapse. It must be at least 1ms.
//
// Default: 3 seconds.
func WithLockTTL(d time.Duration) Option {
	return func(c *config) { c.lockTTL = d }
}

// WithLockWait bounds how long a Get that found the fill lock taken waits
// for the holder's value before it loads the value itself (its value is
// then written only if nothing invalidated the key meanwhile). A negative
// d means no bound: a Get waits as long as the holder keeps the lock
// alive, that is while its load waits for a load slot and runs (up to the
// load timeout), and takes the lock over once a dead holder's lock has
// expired. Zero means do not
// wait at all. A bound shorter than the loads of a slow database turns
// each of its loads into several, one per waiting process.
//
// Default: no bound (a negative duration). The caller's context still
// bounds every Get.
func WithLockWait(d time.Duration) Option {
	return func(c *config) { c.lockWait = d }
}

// WithLoadTimeout bounds one call of the loader, from the moment it has a
// load slot (see [WithMaxConcurrentLoads]): the loader's context is
// cancelled at the timeout, the Gets that wait for it get its error, and a
// value it returns after that is not cached. It is a guard against a
// query that hangs, not a deadline for callers (their own contexts are):
// the fill lock is kept alive while the load runs, so the load timeout may
// be longer than the lock TTL. It must be at least 1ms.
//
// Default: 30 seconds.
func WithLoadTimeout(d time.Duration) Option {
	return func(c *config) { c.loadTimeout = d }
}

// WithRedisTimeout sets the budget of each Redis call the cache makes: how
// long a Redis node may give no reply at all before the call fails. A
// Redis failure is a call that ends with a connection error (refused,
// reset, closed) or an error reply saying the server cannot serve
// (LOADING, MASTERDOWN, ...), or that gets no reply while its node answers
// nothing else either, for the budget (twice the budget, or as long as the
// node's replies took lately, while this process is busy or its calls fill
// the client's pool). A failed call counts for the circuit breaker
// ([WithBreaker]) and Get goes on to the loader without the fill lock.
//
// A call past the budget while its node answers other calls, promptly or
// while this process holds the call up (short of CPU, or waiting for a
// pooled connection behind its own calls), is slow, not failed: it is
// waited for, up to the lock wait ([WithLockWait]), and counts neither for
// nor against the breaker ([Stats].RedisSlow counts it). So are a fresh
// client's calls until its node first answers: a slow first dial is not
// an outage. A frozen, blackholed or dead Redis still costs a Get about
// the budget once it has answered once. With [WithTimeoutClone] the
// client's socket timeouts cut every call at the budget: such a call is
// not waited for, though it is still not counted when it was slow.
//
// Default: 100 milliseconds.
func WithRedisTimeout(d time.Duration) Option {
	return func(c *config) { c.redisTTL = d }
}

// WithMaxRefills bounds how many times one Get reloads and refills a value
// whose conditional fill failed because the key was invalidated or set
// during the load. A conflicting value is never handed out; after that many
// refills fail too, the value is loaded once more and returned without
// being cached. Zero means: after the first conflict, load once more and
// return that uncached.
//
// Default: 2.
func WithMaxRefills(n int) Option {
	return func(c *config) { c.maxRefills = n }
}

// WithCodec sets how values are turned into bytes and back. The codec's
// bytes are wrapped in the cache's own small envelope.
//
// Default: [JSON].
func WithCodec(codec Codec) Option {
	return func(c *config) { c.codec = codec }
}

// WithKeyFunc sets how a key becomes the string inside its Redis keys. Its
// type parameter must match the Cache's key type; New reports a mismatch.
// The function must be deterministic and give distinct strings for
// distinct keys.
//
// Default: strings are used as they are, integers in decimal; other key
// types need this option.
func WithKeyFunc[K comparable](f func(K) string) Option {
	return func(c *config) { c.keyFunc = f }
}

// WithLogger sets where the cache logs events that an operator wants to
// see (circuit state changes, warm-ups, detected restarts). Nil disables
// logging.
//
// Default: nil (no logging).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// WithBreakerHook sets a function called on every state change of a
// circuit breaker around Redis (see [WithBreaker]), for alerting or
// metrics beyond [Stats].Breaker and the log line of [WithLogger]. It runs
// synchronously, while the breaker is locked: it must return quickly and
// must not call the Cache. A panic in it is recovered and logged.
//
// Default: nil.
func WithBreakerHook(fn func(BreakerChange)) Option {
	return func(c *config) { c.breakerHook = fn }
}

// WithGetHook sets a function called once per [Cache.Get], after its
// answer is known, with the Get's context, how it was answered (exactly one
// [GetResult] per Get) and how long it took, for metrics such as the otel
// module's request counter and Get latency histogram. It runs
// synchronously on the caller's goroutine before Get returns: it must be
// quick and must not call the Cache. A panic in it is recovered and
// logged. GetMany does not call it. Nil means no hook, and then Get does
// not read the clock.
//
// Default: nil.
func WithGetHook(fn func(ctx context.Context, result GetResult, took time.Duration)) Option {
	return func(c *config) { c.getHook = fn }
}

// WithBreaker sets the circuit breaker around Redis: after failures
// consecutive Redis calls fail (as [WithRedisTimeout] defines it: errors,
// refused or closed connections, no reply from the node for the Redis
// timeout), the breaker opens and the cache stops
// calling Redis: Gets go straight to the in-process cache, if any, and the
// loader. After cooldown one call is let through as a probe; if it
// succeeds the breaker closes. Error replies from a live server (such as
// OOM under maxmemory) do not count as failures. failures = 0 disables the
// breaker; cooldown must then be ignored, otherwise it must be positive.
// failures must be at most 2³²−1.
//
// On a Redis Cluster (*redis.ClusterClient) each primary node has its own
// breaker, so a dead primary sends only the keys of its slots to the
// loader; once the client's slot map names the promoted replica, those
// keys go to it at once, through a breaker of its own.
//
// Default: 5 failures, 500 milliseconds.
func WithBreaker(failures int, cooldown time.Duration) Option {
	return func(c *config) { c.breakerFailures, c.breakerCooldown = failures, cooldown }
}

// WithTimeoutClone decides how the Redis timeout holds on a *redis.Client
// (a single server or a Sentinel failover client) built without
// ContextTimeoutEnabled, which ignores context deadlines on socket reads.
// Off (the default), every Redis call of the cache runs on a goroutine of
// its own and is abandoned at the Redis timeout (see [WithMaxAbandoned]).
// On, the cache sends its calls through rdb.WithTimeout(the Redis
// timeout): a clone that shares rdb's connection pool (no extra
// connections), with read and write timeouts equal to the Redis timeout,
// so each call runs on the caller's goroutine and a hit costs less. The
// price: go-redis does not carry the client's hooks over to the clone, so
// hooks you added (tracing, metrics) do not see the cache's commands. It
// has no effect on clients with ContextTimeoutEnabled (already the fast
// path) or on Cluster and Ring clients (no such clone).
//
// Default: false.
func WithTimeoutClone(on bool) Option {
	return func(c *config) { c.timeoutClone = on }
}

// WithMaxAbandoned bounds how many Redis calls may run on goroutines of
// their own at once: every call of a client that ignores context deadlines
// and gets no timeout clone (see [WithTimeoutClone]), and the calls of one
// that honours them while the cache must be able to wait for a call past
// the Redis timeout. Such calls are abandoned, not cancelled, when their
// node is judged failed (see the README's failure behaviour). Beyond the
// bound a call waits for another to end, and is not sent if its node is
// judged failed meanwhile, instead of taking more connections from the
// pool.
//
// Default: 64.
func WithMaxAbandoned(n int) Option {
	return func(c *config) { c.maxAbandoned = n }
}

// WithMaxConcurrentLoads bounds how many loader calls one Cache runs at
// once, so that a burst of misses (many keys expiring together, Redis
// unavailable) queues in the cache instead of in the database's connection
// pool. Set it to about this process's share of the database's
// connections. A load that finds every slot taken waits for one, on the
// flight's goroutine: the wait is not counted against the load timeout
// and is never an error of its own, and each caller still stops waiting
// when its context is done. Loads started by a loader (a loader that calls
// Get or GetMany) use their parent's slot and do not wait for another.
// With [WithStaleIfError], an expired value is served without a reload
// while every slot is busy. Zero means no bound.
//
// Default: 16.
func WithMaxConcurrentLoads(n int) Option {
	return func(c *config) { c.maxLoads = n }
}

// WithLocalCache adds an in-process cache (L1) of up to size entries, each
// kept at most ttl and never longer than the Redis TTL it was read with. By
// default L1 is read only while Redis is unavailable (the breaker is open or
// a call failed), so an outage costs at most one load per key per process
// per ttl; see [WithLocalFirst] to read it on every Get. Invalidate and Set
// drop the key from this process's L1 and, through Redis pub/sub on the
// channel <prefix>invalidations, from the L1 of every other process of the
// fleet within milliseconds. size = 0 disables L1.
//
// Default: disabled.
func WithLocalCache(size int, ttl time.Duration) Option {
	return func(c *config) { c.localSize, c.localTTL = size, ttl }
}

// WithLocalFirst makes Get read the in-process cache of [WithLocalCache]
// before Redis on every call, which takes load off Redis for hot keys. The
// price: an Invalidate or Set on another process reaches this process's L1
// through Redis pub/sub, normally within milliseconds; until the message
// arrives a Get here may still return the old local copy. When the
// subscription drops, messages may have been missed: L1 copies are then
// not read on healthy Gets until they have been read from Redis again.
//
// Default: false.
func WithLocalFirst(on bool) Option {
	return func(c *config) { c.localFirst = on }
}

// WithWarmupKeys names keys that [Cache.Warm] loads, and that are warmed
// automatically when Redis comes back empty. Its type parameter must match
// the Cache's key type. It adds to [WithWarmup].
//
// Default: none.
func WithWarmupKeys[K comparable](keys ...K) Option {
	return func(c *config) { c.warmKeys = keys }
}

// WithWarmup sets a function that lists the keys to warm, called by each
// warm-up (for example the top products by sales). Its type parameter must
// match the Cache's key type. It adds to [WithWarmupKeys].
//
// Default: none.
func WithWarmup[K comparable](list func(ctx context.Context) ([]K, error)) Option {
	return func(c *config) { c.warmFunc = list }
}

// WithWarmupConcurrency bounds how many keys a warm-up loads at once.
//
// Default: 8.
func WithWarmupConcurrency(n int) Option {
	return func(c *config) { c.warmConcurrency = n }
}

// WithRestartCheck sets how often the cache checks whether Redis restarted
// empty (its marker key vanished), in which case one process of the fleet
// warms the warm-up keys. The check also runs when the circuit breaker
// closes after an outage. It runs only when warm-up keys are configured.
// Zero disables automatic warm-up.
//
// Default: 1 second.
func WithRestartCheck(interval time.Duration) Option {
	return func(c *config) { c.restartCheck = interval }
}
