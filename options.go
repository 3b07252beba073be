package cacheaside

import (
	"cmp"
	"context"
	"log/slog"
	"time"
)

// An Option configures a [Cache]. Options are applied in order and the last
// one wins. Options are not generic: those that need the key or value type
// infer it from their argument, and [New] reports a mismatch as an error.
type Option func(*config)

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
// ([WithCircuitBreaker]) and Get goes on to the loader without the fill lock.
//
// A call past the budget while its node answers other calls, promptly or
// while this process holds the call up (short of CPU, or waiting for a
// pooled connection behind its own calls), is slow, not failed: it is
// waited for, up to the lock wait ([FillLock].Wait), and counts neither for
// nor against the breaker ([Stats].RedisSlow counts it). So are a fresh
// client's calls until its node first answers: a slow first dial is not
// an outage. A frozen or blackholed Redis still costs a Get about the
// budget once it has answered once. A node that refuses connections
// (killed) fails fast: once the client's dial to it is refused, calls
// waiting on it stop waiting and new calls to it fail without being sent
// (one call per budget tries again); only a call already running on the
// caller's goroutine (a ContextTimeoutEnabled client) pays the budget.
//
// A process short of CPU reads replies late: a reply can sit in its
// socket while the goroutine that reads it waits to run. Before it judges
// a node silent, the cache looks at the node's connections, which it
// watches through a go-redis dial hook from New on: a reply that reached
// this process unread (the kernel's count of bytes received, TCP_INFO on
// Linux, also beneath TLS; or a peek at the socket on other Unix systems)
// makes the call slow, not failed, and a call whose request has not gone
// out yet (no request to the node unanswered for the budget) waits on, or
// on the caller's goroutine is slow rather than failed when its deadline
// cut it before it wrote. The hook wraps
// each connection the client dials; the wrapper forwards everything, and
// implements SyscallConn and NetConn, so go-redis's health checks see the
// socket as before. Telling a request not sent yet needs every
// connection of the client watched: a client that dialed before New (a
// Ping before it) goes without that until those connections close, so
// create the Cache before the client's first call. Off Unix, the cache
// cannot look into a socket and judges by replies alone.
//
// Build the client with ContextTimeoutEnabled: true (see the package
// example), the fast path: the cache then runs its calls on the caller's
// goroutine. A client without it ignores context deadlines on socket
// reads, so the cache runs each call on a goroutine of its own and
// abandons it at the budget (at most 64 at once per Cache, then calls
// wait), and a hit costs measurably more.
//
// Default: 100 milliseconds.
func WithRedisTimeout(d time.Duration) Option {
	return func(c *config) { c.redisTTL = d }
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

// WithGetHook sets a function called once per [Cache.Get], after its
// answer is known, with the Get's context, how it was answered (exactly one
// [GetResult] per Get) and how long it took, for metrics such as the otel
// module's request counter and Get latency histogram. [Cache.GetMany]
// calls it once per distinct key, with that key's result; took is then the
// time from the start of the GetMany to when that key's answer was known
// (a key loaded in the batch waits for the batch). It runs synchronously
// on the caller's goroutine before Get or GetMany returns: it must be
// quick and must not call the Cache. A panic in it is recovered and
// logged. Nil means no hook, and then Get does not read the clock.
//
// Default: nil.
func WithGetHook(fn func(ctx context.Context, result GetResult, took time.Duration)) Option {
	return func(c *config) { c.getHook = fn }
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
// With [WithServeStale], an expired value is served without a reload
// while every slot is busy. Zero means no bound.
//
// Default: 16.
func WithMaxConcurrentLoads(n int) Option {
	return func(c *config) { c.maxLoads = n }
}

// WithWarmup sets a function that lists the keys to warm, called by each
// warm-up (for example the top products by sales). Its type parameter must
// match the Cache's key type. A fixed list is a function that returns it:
//
//	cacheaside.WithWarmup(func(context.Context) ([]int64, error) { return hot, nil })
//
// Default: none.
func WithWarmup[K comparable](list func(ctx context.Context) ([]K, error)) Option {
	return func(c *config) { c.warmFunc = list }
}

// WithBatchLoader sets the loader [Cache.GetMany] calls once for all the
// keys of a batch that missed. Its type parameters must match the Cache's;
// New reports a mismatch. Keys missing from its map do not exist and are
// remembered as not found; an error fails every key of the batch and is
// never remembered as not found.
//
// Default: none; GetMany then calls the LoadFunc for each missing key, at
// most 16 at a time.
func WithBatchLoader[K comparable, V any](load BatchLoadFunc[K, V]) Option {
	return func(c *config) { c.batchLoad = load }
}

// WithEarlyRefresh turns on refresh-ahead: before a value expires, one
// process of the fleet reloads it in the background while every caller
// keeps getting the current value, so a hot key never misses at expiry.
//
// Each Redis hit decides with probabilistic early expiration (XFetch, Vattani
// et al.): it refreshes when now − Δ·β·ln(u) ≥ expiry, where Δ is the load
// time stored with the value, u is uniform in (0, 1] and β is beta. The
// chance grows as the expiry nears and is larger for slow loads; β > 1
// refreshes earlier. The fill lock makes a fleet start about one refresh
// per expiry; refreshes run at most 4 at a time per Cache, on goroutines
// that Close stops. A refresh due while all 4 run is skipped and counted
// in [Stats].RefreshesSkipped; a later hit of the key tries again, and the
// value expires and is reloaded on a miss if none does. Values written by
// Set carry no load time and are not refreshed early. beta = 0 disables
// early refresh.
//
// Default: 0 (disabled).
func WithEarlyRefresh(beta float64) Option {
	return func(c *config) { c.earlyBeta = beta }
}

// WithFillLock sets the fill lock's TTL and wait; see [FillLock].
//
// Default: FillLock{TTL: 3 * time.Second} with no bound on the wait.
func WithFillLock(l FillLock) Option {
	return func(c *config) {
		c.lockTTL, c.lockWait = cmp.Or(l.TTL, defaultLockTTL), l.Wait
		if l.Wait <= 0 {
			c.lockWait = noLimit
		}
	}
}

// WithCircuitBreaker sets the circuit breaker around Redis: after
// Failures consecutive Redis calls fail (errors, refused or closed
// connections, no reply from the node for the Redis timeout), the breaker
// opens and the cache stops calling Redis: Gets go straight to the local
// cache, if any, and the loader. After Cooldown one call is let through
// as a probe; if it succeeds the breaker closes. Error replies from a
// live server (such as OOM under maxmemory) do not count as failures.
//
// On a Redis Cluster (*redis.ClusterClient) each primary node has its own
// breaker, so a dead primary sends only the keys of its slots to the
// loader; once the client's slot map names the promoted replica, those
// keys go to it at once, through a breaker of its own.
//
// Default: CircuitBreaker{Failures: 5, Cooldown: 500 * time.Millisecond}.
func WithCircuitBreaker(b CircuitBreaker) Option {
	return func(c *config) {
		c.breakerFailures = cmp.Or(b.Failures, defaultBreakerFailures)
		if b.Failures < 0 {
			c.breakerFailures = 0
		}
		c.breakerCooldown = cmp.Or(b.Cooldown, defaultBreakerCooldown)
		c.breakerHook = b.OnChange
	}
}

// WithL1 adds a local, in-process cache in front of Redis, read first on
// every Get, which takes load off Redis for hot keys and answers during a
// Redis outage. Invalidate and Set drop the key from this process's local
// cache and, through Redis pub/sub on the channel <prefix>invalidations,
// from every other process's: another process may return the old value
// for as long as that message takes to reach it (normally a few
// milliseconds), and while its subscription is down it does not read its
// local copies on healthy Gets at all. Results the local cache returns
// may be shared: do not modify what they reference.
//
// Default: no local cache.
func WithL1(l L1) Option {
	return func(c *config) {
		c.localSize = cmp.Or(l.Size, defaultL1Size)
		c.localTTL = cmp.Or(l.TTL, defaultL1TTL)
		c.localFirst, c.localFirstSet = !l.OutageOnly, false
		c.localPrefill = l.Prefill
	}
}

// WithServeStale keeps each value in Redis for MaxStale past its logical
// expiry, so that it can still be served when reloading it fails. The
// envelope carries the logical expiry beside the codec's bytes; Redis's
// own TTL is TTL + MaxStale. A Get that finds an expired value reloads it
// under the fill lock; if the loader fails, or another process is already
// reloading it, the old value is returned (counted in Stats.StaleServed)
// with a nil error. After a failed reload the lock is held for a second, so
// a failing database sees about one retry per key per second from the
// whole fleet. Not-found answers are never served stale, and a reload
// that finds the row gone replaces the stale value with a not-found marker
// (for the negative TTL).
//
// The logical expiry is a wall-clock time written by the process that
// loaded the value: clocks that disagree by s make other processes see the
// value expire up to s early or late. That only moves when a reload is
// tried; it never serves a value past its Redis TTL and never survives an
// Invalidate. Keep hosts on NTP.
//
// Default: disabled.
func WithServeStale(s ServeStale) Option {
	return func(c *config) { c.maxStale, c.softTimeout = s.MaxStale, s.SoftTimeout }
}

// WithReplicaAcks makes [Cache.Set] and [Cache.Invalidate] wait until n
// replicas of the primary holding each key have the change (Redis WAIT),
// for at most timeout, so that a primary that fails right after an
// acknowledged Invalidate does not leave its promoted replica serving the
// old value. [Cache.Clear] and [Cache.InvalidateTag] wait the same way for
// the replicas of the clock key's primary (and on a Cluster of each
// primary holding clock replicas). When fewer replicas confirm in time the change is still in
// place on the primary, and the call returns an error matching
// [ErrNotReplicated]. Each write then costs one replication round trip on
// top of the Redis call (it may take up to timeout plus the Redis
// timeout); Gets are unaffected. It works on a single server with
// replicas, behind Sentinel and on a Cluster (each key's primary waits for
// its own replicas); a redis.Ring is rejected. timeout must be positive, a
// whole number of milliseconds, and with the Redis timeout within the
// client's ReadTimeout. n 0 turns it off. Default: 0 (a write returns once
// the primary has it).
//
// A slow primary is not an outage with the option either: a write and
// its WAIT are not cut at the Redis timeout but waited for up to timeout
// plus the lock wait (the bound of a write without the option: its
// retries until the lock wait), and one held longer while the primary
// answered other calls fails (queued, as for any write that could not be
// applied) without counting against the circuit breaker. One that waited
// for a pooled connection while the primary answered others is sent
// again; the writes are idempotent.
func WithReplicaAcks(n int, timeout time.Duration) Option {
	return func(c *config) { c.replicaAcks, c.replicaWait = n, timeout }
}

// WithAudit turns on the consistency auditor: in the background, about
// fraction of the Gets and GetMany keys answered from Redis are loaded
// again from the loader and compared with what they returned, with same
// (both "not found" is a match, one side only is stale). [Stats] counts
// AuditChecks and AuditStale and keeps the age of the oldest stale value
// found (the time since its entry was stored); each stale value is logged
// at warn level (at most one line a second) with its key and age. The
// auditor only measures: it invalidates nothing, writes nothing and never
// takes the fill lock. Hits served by the L1 are not sampled.
//
// Audits run one at a time on a goroutine of the Cache, under the load
// timeout, in a free load slot or not at all ([WithMaxConcurrentLoads]),
// and never delay a Get. At most 10 audit loads a second (bursts of 10)
// are started per Cache, so a fleet of n processes adds at most 10·n
// loads a second to the database whatever the fraction and traffic;
// samples past the cap or a queue of 16 are dropped and counted
// (AuditDropped). Audit loads are not counted in Stats.Loads; a loader
// error or panic in an audit is counted in AuditErrors and otherwise
// ignored, as is a panic in same, which must not modify its arguments
// (cached may be shared with callers). The type parameter must match the
// Cache's value type; New reports a mismatch, a nil same and a fraction
// outside (0, 1].
//
// Default: off.
func WithAudit[V any](fraction float64, same func(cached, fresh V) bool) Option {
	return func(c *config) { c.auditFraction, c.auditSame = fraction, same }
}

// WithSyncInvalidation makes [Cache.Set] and [Cache.Invalidate] return
// only once every live process of the fleet has dropped the key from its
// local cache ([WithL1]), for at most timeout: with it, the consistency
// promise holds on every process even when the local cache is read
// first. A live process is one whose lease in the registry of live
// subscribers (a sorted set per prefix in Redis) holds when the message
// is published: a process with a local cache renews its lease every
// second while its subscription answers its PINGs, and trusts its local
// cache on healthy Gets only while the lease holds, by its own clock,
// ending before Redis drops it (3 s after the last renewal). So a process
// whose subscription Redis has closed without it noticing yet (its reader
// lags, the link is half-open) is waited for until its lease ends, and no
// longer trusts its local cache by then; a process that noticed its drop
// leaves the registry and trusts none of its local cache until it has
// applied, from the invalidation stream, every message sent meanwhile
// (and confirms those that asked). Each subscription confirms once it has
// handed the message to every Cache it serves, this process's own
// included. When some do not confirm within timeout (a process stalled
// for less than its lease) the call returns an error matching
// [ErrNotConfirmed] that says how many did not; the change is in Redis
// and is not queued. A timeout above about 4.5 s lets a call outwait
// the lease of a process that died unnoticed instead of reporting it.
// Processes of an earlier version keep no lease and are not waited for. Each write then
// costs the confirmations' round trips on top of the Redis call, and
// holds one connection of the client's pool while it waits (BLMPOP, at
// most 100ms a call); Gets are unaffected. A replayed invalidation
// ([ErrQueued]) waits for confirmations too, and logs the processes that
// did not confirm. It works on a single server, Sentinel and a Redis
// Cluster; New rejects it on a redis.Ring. timeout
// must be positive.
//
// Default: off (Set and Invalidate return once Redis has the change and
// the message is published; other processes drop their local copies
// within the message's delivery time).
func WithSyncInvalidation(timeout time.Duration) Option {
	return func(c *config) { c.syncWait, c.syncSet = timeout, true }
}
