package cacheotel

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"reflect"
	"strconv"

	"github.com/cacheaside/cacheaside"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// counter describes one observable counter fed by a field of
// [cacheaside.Stats].
type counter struct {
	name, unit, desc string
	value            func(cacheaside.Stats) uint64
}

// counters lists the counters of cacheaside.Stats that RegisterMetrics
// exports, in the order of its fields. Hits, LocalHits, Misses and
// StaleServed are not among them: cacheaside.requests (GetHook) counts
// every Get once with its result; nor is LoadErrors, which is the count of
// cacheaside.load.duration{outcome="error"} (WrapLoader).
var counters = []counter{
	{"cacheaside.loads", "{load}", "Loader calls.",
		func(s cacheaside.Stats) uint64 { return s.Loads }},
	{"cacheaside.load.panics", "{load}", "Loader calls that panicked (outcome error in cacheaside.load.duration).",
		func(s cacheaside.Stats) uint64 { return s.Panics }},
	{"cacheaside.lock.acquisitions", "{lock}", "Fill locks this process took.",
		func(s cacheaside.Stats) uint64 { return s.LockAcquired }},
	{"cacheaside.lock.waits", "{wait}", "Flights that found the fill lock taken and waited for its holder.",
		func(s cacheaside.Stats) uint64 { return s.LockWaits }},
	{"cacheaside.lock.wait.timeouts", "{wait}", "Lock waits that ended without a value; the waiter then loaded by itself.",
		func(s cacheaside.Stats) uint64 { return s.LockWaitTimeouts }},
	{"cacheaside.fill.conflicts", "{fill}", "Loads discarded because the key was invalidated or set meanwhile.",
		func(s cacheaside.Stats) uint64 { return s.FillConflicts }},
	{"cacheaside.entries.corrupt", "{entry}", "Redis entries that could not be decoded and were treated as misses.",
		func(s cacheaside.Stats) uint64 { return s.Corrupt }},
	{"cacheaside.redis.errors", "{call}", "Redis calls that failed, ran past the Redis timeout, or were skipped.",
		func(s cacheaside.Stats) uint64 { return s.RedisErrors }},
	{"cacheaside.redis.skipped", "{call}", "Redis calls not sent: circuit breaker open or too many abandoned calls.",
		func(s cacheaside.Stats) uint64 { return s.RedisSkipped }},
	{"cacheaside.redis.slow", "{call}", "Redis calls past the Redis timeout while their node answered others: waited for, not failures.",
		func(s cacheaside.Stats) uint64 { return s.RedisSlow }},
	{"cacheaside.redis.abandoned", "{call}", "Redis calls abandoned at the Redis timeout.",
		func(s cacheaside.Stats) uint64 { return s.Abandoned }},
	{"cacheaside.breaker.opens", "{transition}", "Times a circuit breaker around Redis opened, all nodes together.",
		func(s cacheaside.Stats) uint64 { return s.BreakerOpens }},
	{"cacheaside.warmup.keys", "{key}", "Keys loaded and written by warm-ups.",
		func(s cacheaside.Stats) uint64 { return s.Warmed }},
	{"cacheaside.warmup.runs", "{run}", "Warm-ups run, by Warm or automatically.",
		func(s cacheaside.Stats) uint64 { return s.WarmUps }},
	{"cacheaside.restarts.detected", "{restart}", "Empty Redis restarts this process detected and warmed after.",
		func(s cacheaside.Stats) uint64 { return s.RestartsDetected }},
	{"cacheaside.refresh.runs", "{refresh}", "Background refreshes this process ran before values expired.",
		func(s cacheaside.Stats) uint64 { return s.EarlyRefreshes }},
	{"cacheaside.refresh.skipped", "{refresh}", "Early refreshes due but not started because every refresh slot was busy.",
		func(s cacheaside.Stats) uint64 { return s.RefreshesSkipped }},
	{"cacheaside.local.invalidations", "{message}", "Invalidation messages from other processes applied to the in-process cache.",
		func(s cacheaside.Stats) uint64 { return s.LocalInvalidations }},
	{"cacheaside.invalidations.queued", "{key}", "Keys whose Set or Invalidate could not be applied in Redis and were queued for replay.",
		func(s cacheaside.Stats) uint64 { return s.InvalidationsQueued }},
	{"cacheaside.invalidations.replayed", "{key}", "Keys whose queued invalidation was applied in Redis.",
		func(s cacheaside.Stats) uint64 { return s.InvalidationsReplayed }},
	{"cacheaside.invalidations.dropped", "{key}", "Keys dropped unapplied past the bound of the queue of invalidations.",
		func(s cacheaside.Stats) uint64 { return s.InvalidationsDropped }},
	{"cacheaside.local.resumes", "{resume}", "Dropped invalidation subscriptions after which the in-process cache was trusted again, what was missed having been replayed.",
		func(s cacheaside.Stats) uint64 { return s.LocalResumes }},
	{"cacheaside.audit.checks", "{check}", "Sampled Redis hits the consistency auditor compared with a fresh load.",
		func(s cacheaside.Stats) uint64 { return s.AuditChecks }},
	{"cacheaside.audit.stale", "{check}", "Audit checks whose cached value differed from the fresh load.",
		func(s cacheaside.Stats) uint64 { return s.AuditStale }},
	{"cacheaside.audit.dropped", "{sample}", "Sampled hits not audited: past the auditor's rate cap, queue or free load slots.",
		func(s cacheaside.Stats) uint64 { return s.AuditDropped }},
	{"cacheaside.audit.errors", "{check}", "Audit loads that failed, panicked or timed out, comparisons that panicked, and failed Redis re-reads.",
		func(s cacheaside.Stats) uint64 { return s.AuditErrors }},
	{"cacheaside.local.feed_broken", "{message}", "Invalidation messages published without their stream, whose key holds another type: a dropped subscriber then distrusts its in-process cache.",
		func(s cacheaside.Stats) uint64 { return s.LocalFeedBroken }},
}

// The gauges of the consistency auditor (cacheaside.WithAudit), reported
// once it has checked a value: the share of checks that found a stale
// value, and the age of the oldest stale value found.
const (
	auditRatioName  = "cacheaside.audit.stale.ratio"
	auditOldestName = "cacheaside.audit.stale.oldest"
)

// pendingName is the gauge of Stats.InvalidationsPending, the one field
// of Stats that also falls.
const pendingName = "cacheaside.invalidations.pending"

// The gauge of the circuit breakers' states and its attributes.
const (
	breakerStateName = "cacheaside.breaker.state"
	attrState        = "state"
	attrAddress      = "server.address"
	attrPort         = "server.port"
)

// breakerStates are the values of the state attribute, one per
// [cacheaside.BreakerState] but disabled, which is reported alone.
var breakerStates = []struct {
	state cacheaside.BreakerState
	value string
}{
	{cacheaside.BreakerClosed, "closed"},
	{cacheaside.BreakerHalfOpen, "half_open"},
	{cacheaside.BreakerOpen, "open"},
}

// Source is what RegisterMetrics reads from a cache at each collection.
// Every [cacheaside.Cache] satisfies it.
type Source interface {
	Stats() cacheaside.Stats
	BreakerStates() map[string]cacheaside.BreakerState
}

// RegisterMetrics creates on meter one observable counter per counter of
// [cacheaside.Stats] it exports and the gauge cacheaside.breaker.state,
// and registers one callback that reads c once per collection and reports
// them all. Pass any [cacheaside.Cache]. Every measurement carries the
// attribute cache=name; an empty name leaves it out.
//
// The counters are cumulative since the cache was created, each
// documented by the Stats field it reads: cacheaside.loads,
// cacheaside.load.panics, cacheaside.lock.acquisitions,
// cacheaside.lock.waits, cacheaside.lock.wait.timeouts,
// cacheaside.fill.conflicts, cacheaside.entries.corrupt,
// cacheaside.redis.errors, cacheaside.redis.skipped, cacheaside.redis.slow,
// cacheaside.redis.abandoned, cacheaside.breaker.opens,
// cacheaside.warmup.keys, cacheaside.warmup.runs,
// cacheaside.restarts.detected, cacheaside.refresh.runs,
// cacheaside.refresh.skipped, cacheaside.local.invalidations,
// cacheaside.invalidations.queued, cacheaside.invalidations.replayed,
// cacheaside.invalidations.dropped, cacheaside.local.resumes,
// cacheaside.audit.checks, cacheaside.audit.stale, cacheaside.audit.dropped
// and cacheaside.audit.errors; the gauge cacheaside.invalidations.pending
// reports Stats.InvalidationsPending. With the consistency auditor
// (cacheaside.WithAudit), once it has checked a value, the gauge
// cacheaside.audit.stale.ratio reports AuditStale / AuditChecks (0 to 1)
// and cacheaside.audit.stale.oldest the age in seconds of the oldest stale
// value found (Stats.AuditOldestStale; 0 while none was). Gets are
// counted by [GetHook] (cacheaside.requests, by result) and load errors by
// [WrapLoader] (cacheaside.load.duration, by outcome).
//
// cacheaside.breaker.state follows the OpenTelemetry convention for
// states: for each Redis node, one point per state (state = closed,
// half_open or open), 1 for the node's current state and 0 for the
// others; a disabled breaker reports state=disabled 1 alone. On a Redis
// Cluster each primary the cache has called is a node, named by the
// attributes server.address and server.port; a single server or Sentinel
// primary has no such attributes (see [cacheaside.Cache.BreakerStates]).
//
// Call Unregister on the returned registration before closing the cache,
// or when the meter's provider outlives it; a closed cache still reports
// its last counts. RegisterMetrics returns an error when meter or c is
// nil, or joining every error the meter returned while creating the
// instruments or registering the callback.
func RegisterMetrics(meter metric.Meter, name string, c Source) (metric.Registration, error) {
	var errs []error
	if meter == nil {
		errs = append(errs, errors.New("nil meter"))
	}
	if c == nil || (reflect.ValueOf(c).Kind() == reflect.Pointer && reflect.ValueOf(c).IsNil()) {
		errs = append(errs, errors.New("nil cache"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("cacheotel: register metrics: %w", err)
	}

	observers := make([]metric.Int64ObservableCounter, len(counters))
	instruments := make([]metric.Observable, 0, len(counters)+4)
	for i, ctr := range counters {
		o, err := meter.Int64ObservableCounter(ctr.name, metric.WithUnit(ctr.unit), metric.WithDescription(ctr.desc))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ctr.name, err))
		}
		observers[i] = o
		instruments = append(instruments, o)
	}
	breaker, err := meter.Int64ObservableGauge(breakerStateName, metric.WithUnit("{state}"),
		metric.WithDescription("1 for the current state of each Redis node's circuit breaker, 0 for its other states."))
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", breakerStateName, err))
	}
	instruments = append(instruments, breaker)
	pending, err := meter.Int64ObservableGauge(pendingName, metric.WithUnit("{key}"),
		metric.WithDescription("Keys whose invalidation is queued for replay now."))
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", pendingName, err))
	}
	instruments = append(instruments, pending)
	ratio, err := meter.Float64ObservableGauge(auditRatioName, metric.WithUnit("1"),
		metric.WithDescription("Share of the consistency auditor's checks that found a stale value."))
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", auditRatioName, err))
	}
	oldest, err := meter.Float64ObservableGauge(auditOldestName, metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest stale value the consistency auditor found: time since its entry was stored."))
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", auditOldestName, err))
	}
	instruments = append(instruments, ratio, oldest)

	attrs := metric.WithAttributeSet(attributes(name))
	reg, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := c.Stats()
		for i, ctr := range counters {
			o.ObserveInt64(observers[i], toInt64(ctr.value(s)), attrs)
		}
		o.ObserveInt64(pending, toInt64(s.InvalidationsPending), attrs)
		if s.AuditChecks > 0 {
			o.ObserveFloat64(ratio, float64(s.AuditStale)/float64(s.AuditChecks), attrs)
			o.ObserveFloat64(oldest, s.AuditOldestStale.Seconds(), attrs)
		}
		for node, state := range c.BreakerStates() {
			observeBreaker(o, breaker, name, node, state)
		}
		return nil
	}, instruments...)
	if err != nil {
		errs = append(errs, fmt.Errorf("registering the callback: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		if reg != nil {
			_ = reg.Unregister()
		}
		return nil, fmt.Errorf("cacheotel: register metrics: %w", err)
	}
	return reg, nil
}

// observeBreaker reports the state of the breaker of one node.
func observeBreaker(o metric.Observer, g metric.Int64ObservableGauge, name, node string, state cacheaside.BreakerState) {
	var base []attribute.KeyValue
	if node != "" {
		host, port, err := net.SplitHostPort(node)
		if p, perr := strconv.Atoi(port); err == nil && perr == nil {
			base = append(base, attribute.String(attrAddress, host), attribute.Int(attrPort, p))
		} else {
			base = append(base, attribute.String(attrAddress, node))
		}
	}
	if state == cacheaside.BreakerDisabled {
		o.ObserveInt64(g, 1, metric.WithAttributeSet(attributes(name, append(base, attribute.String(attrState, "disabled"))...)))
		return
	}
	for _, s := range breakerStates {
		var v int64
		if s.state == state {
			v = 1
		}
		kv := append(base[:len(base):len(base)], attribute.String(attrState, s.value))
		o.ObserveInt64(g, v, metric.WithAttributeSet(attributes(name, kv...)))
	}
}

// attributes returns the attribute set that names a cache: cache=name, or
// no attribute for an empty name.
func attributes(name string, more ...attribute.KeyValue) attribute.Set {
	if name != "" {
		more = append(more, attribute.String(attrCache, name))
	}
	return attribute.NewSet(more...)
}

// toInt64 converts a counter for an Int64 instrument. Counters do not
// reach 2⁶³ in practice; one that did would stick at the maximum rather
// than wrap to a negative number.
func toInt64(v uint64) int64 {
	return int64(min(v, math.MaxInt64))
}
