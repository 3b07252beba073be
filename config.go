package cacheaside

import (
	"context"
	"log/slog"
	"time"
)

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

	localSize     int
	localTTL      time.Duration
	localFirst    bool
	localFirstSet bool // by WithLocalFirst, which WithLocalCache must not undo
	localPrefill  bool
	waiterCtxs    bool

	warmKeys        any // []K
	warmFunc        any // func(context.Context) ([]K, error)
	warmConcurrency int
	restartCheck    time.Duration

	replicaAcks int           // WithReplicaAcks
	replicaWait time.Duration // WithReplicaAcks

	auditFraction float64 // WithAudit
	auditSame     any     // WithAudit: func(cached, fresh V) bool, checked in New

	syncWait time.Duration // WithSyncInvalidation; 0: off
	syncSet  bool          // WithSyncInvalidation was given

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
	defaultL1Size          = 10_000
	defaultL1TTL           = time.Minute
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
		localFirst:      true,
		waiterCtxs:      true,
		warmConcurrency: defaultWarmConcurrency,
		restartCheck:    defaultRestartCheck,
	}
}
