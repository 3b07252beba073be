package cacheotel

import (
	"context"
	"errors"
	"fmt"
	"math"

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

// counters lists every counter of cacheaside.Stats, in the order of its
// fields.
var counters = []counter{
	{"cacheaside.hits", "{request}", "Gets answered from Redis, values and cached not-found answers alike.",
		func(s cacheaside.Stats) uint64 { return s.Hits }},
	{"cacheaside.local_hits", "{request}", "Gets answered from the in-process cache.",
		func(s cacheaside.Stats) uint64 { return s.LocalHits }},
	{"cacheaside.misses", "{request}", "Gets answered by a load.",
		func(s cacheaside.Stats) uint64 { return s.Misses }},
	{"cacheaside.loads", "{load}", "Loader calls.",
		func(s cacheaside.Stats) uint64 { return s.Loads }},
	{"cacheaside.load.errors", "{load}", "Loader calls that failed with an error other than not found, or panicked.",
		func(s cacheaside.Stats) uint64 { return s.LoadErrors }},
	{"cacheaside.load.panics", "{load}", "Loader calls that panicked (also counted in cacheaside.load.errors).",
		func(s cacheaside.Stats) uint64 { return s.Panics }},
	{"cacheaside.lock.acquisitions", "{lock}", "Fill locks this process took.",
		func(s cacheaside.Stats) uint64 { return s.LockAcquired }},
	{"cacheaside.lock.waits", "{wait}", "Flights that found the fill lock taken and waited for its holder.",
		func(s cacheaside.Stats) uint64 { return s.LockWaits }},
	{"cacheaside.lock.wait_timeouts", "{wait}", "Lock waits that ended without a value; the waiter then loaded by itself.",
		func(s cacheaside.Stats) uint64 { return s.LockWaitTimeouts }},
	{"cacheaside.fill.conflicts", "{fill}", "Loads discarded because the key was invalidated or set meanwhile.",
		func(s cacheaside.Stats) uint64 { return s.FillConflicts }},
	{"cacheaside.corrupt_entries", "{entry}", "Redis entries that could not be decoded and were treated as misses.",
		func(s cacheaside.Stats) uint64 { return s.Corrupt }},
	{"cacheaside.redis.errors", "{call}", "Redis calls that failed, ran past the Redis timeout, or were skipped.",
		func(s cacheaside.Stats) uint64 { return s.RedisErrors }},
	{"cacheaside.redis.skipped", "{call}", "Redis calls not sent: circuit breaker open or too many abandoned calls.",
		func(s cacheaside.Stats) uint64 { return s.RedisSkipped }},
	{"cacheaside.redis.slow", "{call}", "Redis calls past the Redis timeout while their node answered others: waited for, not failures.",
		func(s cacheaside.Stats) uint64 { return s.RedisSlow }},
	{"cacheaside.redis.abandoned", "{call}", "Redis calls abandoned at the Redis timeout.",
		func(s cacheaside.Stats) uint64 { return s.Abandoned }},
	{"cacheaside.breaker.opens", "{transition}", "Times the circuit breaker around Redis opened.",
		func(s cacheaside.Stats) uint64 { return s.BreakerOpens }},
	{"cacheaside.warmup.keys", "{key}", "Keys loaded and written by warm-ups.",
		func(s cacheaside.Stats) uint64 { return s.Warmed }},
	{"cacheaside.warmup.runs", "{run}", "Warm-ups run, by Warm or automatically.",
		func(s cacheaside.Stats) uint64 { return s.WarmUps }},
	{"cacheaside.restarts_detected", "{restart}", "Empty Redis restarts this process detected and warmed after.",
		func(s cacheaside.Stats) uint64 { return s.RestartsDetected }},
	{"cacheaside.early_refreshes", "{refresh}", "Background refreshes this process ran before values expired.",
		func(s cacheaside.Stats) uint64 { return s.EarlyRefreshes }},
	{"cacheaside.early_refreshes.skipped", "{refresh}", "Early refreshes due but not started because every refresh slot was busy.",
		func(s cacheaside.Stats) uint64 { return s.RefreshesSkipped }},
	{"cacheaside.local.invalidations", "{message}", "Invalidation messages from other processes applied to the in-process cache.",
		func(s cacheaside.Stats) uint64 { return s.LocalInvalidations }},
	{"cacheaside.stale_served", "{request}", "Gets answered with a value past its logical expiry.",
		func(s cacheaside.Stats) uint64 { return s.StaleServed }},
}

// breakerStateName is the name of the gauge of the circuit breaker's state.
const breakerStateName = "cacheaside.breaker.state"

// breakerValue returns the value the cacheaside.breaker.state gauge reports
// for s: 0 closed, 1 half-open, 2 open, -1 disabled. ok is false for a state
// this package does not know, which the gauge leaves out.
func breakerValue(s cacheaside.BreakerState) (v int64, ok bool) {
	switch s {
	case cacheaside.BreakerClosed:
		return 0, true
	case cacheaside.BreakerHalfOpen:
		return 1, true
	case cacheaside.BreakerOpen:
		return 2, true
	case cacheaside.BreakerDisabled:
		return -1, true
	}
	return 0, false
}

// RegisterMetrics creates on meter one observable counter per counter of
// [cacheaside.Stats] and the gauge cacheaside.breaker.state (0 closed,
// 1 half-open, 2 open, -1 disabled), and registers one callback that calls
// stats once per collection and reports them all. Pass the Stats method of any
// [cacheaside.Cache], as in cache.Stats. Every measurement carries the
// attribute cache=name; an empty name leaves it out.
//
// The counters are cumulative since the cache was created: cacheaside.hits,
// cacheaside.local_hits and cacheaside.misses count Gets ("{request}");
// cacheaside.loads, cacheaside.load.errors and cacheaside.load.panics count
// loader calls; then cacheaside.lock.acquisitions, cacheaside.lock.waits,
// cacheaside.lock.wait_timeouts, cacheaside.fill.conflicts,
// cacheaside.corrupt_entries, cacheaside.redis.errors,
// cacheaside.redis.skipped, cacheaside.redis.slow, cacheaside.redis.abandoned,
// cacheaside.breaker.opens, cacheaside.warmup.keys, cacheaside.warmup.runs,
// cacheaside.restarts_detected, cacheaside.early_refreshes,
// cacheaside.local.invalidations and cacheaside.stale_served, each
// documented by the Stats field it reads. On a Redis Cluster the breaker
// gauge and cacheaside.breaker.opens cover every node's breaker (the gauge
// shows the most open one).
//
// Call Unregister on the returned registration before closing the cache,
// or when the meter's provider outlives it; a closed cache still reports
// its last counts. RegisterMetrics returns an error when meter or stats is
// nil, or joining every error the meter returned while creating the
// instruments or registering the callback.
func RegisterMetrics(meter metric.Meter, name string, stats func() cacheaside.Stats) (metric.Registration, error) {
	var errs []error
	if meter == nil {
		errs = append(errs, errors.New("nil meter"))
	}
	if stats == nil {
		errs = append(errs, errors.New("nil stats function"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("cacheotel: register metrics: %w", err)
	}

	observers := make([]metric.Int64ObservableCounter, len(counters))
	instruments := make([]metric.Observable, 0, len(counters)+1)
	for i, c := range counters {
		o, err := meter.Int64ObservableCounter(c.name, metric.WithUnit(c.unit), metric.WithDescription(c.desc))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.name, err))
		}
		observers[i] = o
		instruments = append(instruments, o)
	}
	breaker, err := meter.Int64ObservableGauge(breakerStateName, metric.WithUnit("{state}"),
		metric.WithDescription("State of the circuit breaker around Redis: 0 closed, 1 half-open, 2 open, -1 disabled."))
	if err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", breakerStateName, err))
	}
	instruments = append(instruments, breaker)

	attrs := metric.WithAttributeSet(attributes(name))
	reg, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := stats()
		for i, c := range counters {
			o.ObserveInt64(observers[i], toInt64(c.value(s)), attrs)
		}
		if v, ok := breakerValue(s.Breaker); ok {
			o.ObserveInt64(breaker, v, attrs)
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
