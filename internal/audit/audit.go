// Package audit measures how stale a cache is: it re-reads a sampled
// fraction of hits from the source of truth, in the background and at a
// bounded rate, and counts the cached values that differ from what the
// source holds now, with their age. It only measures: it never writes to
// the cache and never invalidates what it finds.
package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"sync/atomic"
	"time"
)

// Rate is the most audit loads an Auditor starts per second, and Burst
// how many it may start at once after a quiet spell. QueueSize bounds the
// samples waiting for the worker.
const (
	Rate      = 10
	Burst     = 10
	QueueSize = 16
)

// A Sample is one hit picked for an audit: the value the cache answered
// with (or a cached "not found") and when that entry was stored.
type Sample[K any, V any] struct {
	Key      K
	VKey     string // the key's name in the cache, for the re-check and the log
	Val      V
	NotFound bool
	Stored   time.Time // zero when unknown (entries written before v0.3)
}

// ErrDropped is what Config.Load returns for a sample it did not load
// (the cache had no free load slot): counted as dropped, not as an error.
var ErrDropped = errors.New("audit: sample dropped")

// Config is what an Auditor needs from its cache.
type Config[K any, V any] struct {
	Fraction float64                    // of hits to audit, in (0, 1]
	Same     func(cached, fresh V) bool // reports whether two values agree
	// Load reads the key from the source of truth under the cache's load
	// timeout; notFound is the loader's ErrNotFound, err any other failure
	// (a panic included), ErrDropped a load not run. It must not write to
	// the cache.
	Load func(ctx context.Context, key K) (v V, notFound bool, err error)
	// Replaced reports whether the cache's entry of vkey is no longer the
	// one stored at stored (it was invalidated, set or refilled since the
	// sample): a value that differs from the source is then not a finding.
	// Nil means the entry is assumed to be in place.
	Replaced func(ctx context.Context, vkey string, stored time.Time) (bool, error)
	Logger   *slog.Logger // nil: no logging
}

// Counts are an Auditor's counters.
type Counts struct {
	Checks      uint64        // samples compared with a fresh load
	Stale       uint64        // checks whose cached value differed from the fresh load
	Dropped     uint64        // samples not audited: past the rate cap, the queue or the cache's load slots
	Errors      uint64        // audit loads that failed or panicked, panics of Same, failed Replaced checks: not counted
	OldestStale time.Duration // the greatest age of a stale value found
}

// Auditor samples hits and audits them on one worker goroutine (Run).
// Sample and Offer are safe for concurrent use and take no lock.
type Auditor[K any, V any] struct {
	cfg       Config[K, V]
	threshold uint64 // a hit is sampled when a uniform uint64 is below it
	queue     chan Sample[K, V]
	next      atomic.Int64 // the rate limiter's theoretical arrival time, UnixNano
	lastLog   atomic.Int64 // UnixNano of the last warning logged
	unlogged  atomic.Uint64

	checks, stale, dropped, errs atomic.Uint64
	oldest                       atomic.Int64
}

// New returns an Auditor for cfg; cfg.Fraction must be in (0, 1].
func New[K any, V any](cfg Config[K, V]) *Auditor[K, V] {
	a := &Auditor[K, V]{cfg: cfg, queue: make(chan Sample[K, V], QueueSize)}
	if cfg.Fraction >= 1 {
		a.threshold = math.MaxUint64
	} else {
		a.threshold = uint64(cfg.Fraction * (1 << 64))
	}
	return a
}

// Sample reports whether this hit is to be audited: true for about the
// configured fraction of calls. It is the only cost on the hit path of a
// hit not picked.
func (a *Auditor[K, V]) Sample() bool {
	return rand.Uint64() < a.threshold
}

// Offer queues s for an audit, or drops it (counted) when the rate cap
// or the queue is full. It never blocks.
func (a *Auditor[K, V]) Offer(s Sample[K, V]) {
	if !a.allow(time.Now().UnixNano()) {
		a.dropped.Add(1)
		return
	}
	select {
	case a.queue <- s:
	default:
		a.dropped.Add(1)
	}
}

// interval is the time between two audit loads at the rate cap.
const interval = int64(time.Second / Rate)

// allow is a lock-free GCRA limiter: at most Rate a second, Burst at once.
func (a *Auditor[K, V]) allow(now int64) bool {
	for {
		tat := a.next.Load()
		start := max(tat, now)
		if start-now > (Burst-1)*interval {
			return false
		}
		if a.next.CompareAndSwap(tat, start+interval) {
			return true
		}
	}
}

// Run audits queued samples until ctx is done, one at a time.
func (a *Auditor[K, V]) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case s := <-a.queue:
			a.check(ctx, s)
		}
	}
}

// Counts returns the Auditor's counters. Stale is read before Checks,
// which a check counts first, so that Stale <= Checks.
func (a *Auditor[K, V]) Counts() Counts {
	stale := a.stale.Load()
	return Counts{
		Checks:      a.checks.Load(),
		Stale:       stale,
		Dropped:     a.dropped.Load(),
		Errors:      a.errs.Load(),
		OldestStale: time.Duration(a.oldest.Load()),
	}
}

// check compares one sample with a fresh load. Both "not found" is a
// match; "not found" on one side only is stale.
func (a *Auditor[K, V]) check(ctx context.Context, s Sample[K, V]) {
	fresh, notFound, err := a.cfg.Load(ctx, s.Key)
	switch {
	case errors.Is(err, ErrDropped):
		a.dropped.Add(1)
		return
	case err != nil:
		if ctx.Err() == nil {
			a.errs.Add(1)
		}
		return
	}
	stale := s.NotFound != notFound
	if !s.NotFound && !notFound {
		same, err := a.same(s.Val, fresh)
		if err != nil {
			a.errs.Add(1)
			a.log(ctx, slog.LevelError, "cacheaside: audit comparison panicked", "key", s.VKey, "panic", err.Error())
			return
		}
		stale = !same
	}
	if stale && a.cfg.Replaced != nil {
		// The entry may have been invalidated or set since it was read:
		// then the difference is a change on its way, not a stale value.
		// A re-read that fails cannot tell: the sample is not counted.
		gone, err := a.cfg.Replaced(ctx, s.VKey, s.Stored)
		if err != nil {
			if ctx.Err() == nil {
				a.errs.Add(1)
			}
			return
		}
		stale = !gone
	}
	a.checks.Add(1)
	if !stale {
		return
	}
	a.stale.Add(1)
	var age time.Duration
	if !s.Stored.IsZero() {
		age = max(time.Since(s.Stored), 0)
		for old := a.oldest.Load(); int64(age) > old && !a.oldest.CompareAndSwap(old, int64(age)); old = a.oldest.Load() {
		}
	}
	a.warn(ctx, s.VKey, age, !s.Stored.IsZero())
}

// same calls Same, turning a panic into an error.
func (a *Auditor[K, V]) same(cached, fresh V) (ok bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%v", p)
		}
	}()
	return a.cfg.Same(cached, fresh), nil
}

// logEvery bounds the warnings about stale values to one per interval;
// the ones in between are counted in the next.
const logEvery = time.Second

// warn logs a stale finding, at most once per logEvery.
func (a *Auditor[K, V]) warn(ctx context.Context, vkey string, age time.Duration, known bool) {
	if a.cfg.Logger == nil {
		return
	}
	now := time.Now().UnixNano()
	last := a.lastLog.Load()
	if now-last < int64(logEvery) || !a.lastLog.CompareAndSwap(last, now) {
		a.unlogged.Add(1)
		return
	}
	attrs := []any{"key", vkey, "age", age, "age_known", known, "stale_not_logged", a.unlogged.Swap(0)}
	a.log(ctx, slog.LevelWarn, "cacheaside: audit found a stale value (differs from the loader's; not invalidated)", attrs...)
}

func (a *Auditor[K, V]) log(ctx context.Context, level slog.Level, msg string, attrs ...any) {
	if a.cfg.Logger != nil {
		a.cfg.Logger.Log(ctx, level, msg, attrs...)
	}
}
