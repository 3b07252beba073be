package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"time"

	"github.com/cacheaside/cacheaside"
)

// Result is what a run measured: the summary per strategy and the
// timeline behind it. It is also the JSON that -json writes.
type Result struct {
	Params     Params           `json:"params"`
	Redis      string           `json:"redis"`
	RestartMs  float64          `json:"restart_ms"` // until the restarted Redis answered
	DownMs     float64          `json:"down_ms"`    // from the kill's return to the restarted Redis answering
	RunSeconds float64          `json:"run_seconds"`
	Strategies []StrategyResult `json:"strategies"`
	Notes      []string         `json:"notes"`
}

// Params are the settings of the run, in JSON-friendly units.
type Params struct {
	Instances   int     `json:"instances"`
	Keys        int     `json:"keys"`
	Rate        float64 `json:"rate"`
	WarmS       int     `json:"warm_s"`
	HealthyS    int     `json:"healthy_s"`
	OutageS     int     `json:"outage_s"`
	RecoveryS   int     `json:"recovery_s"`
	DBLatencyMs float64 `json:"db_latency_ms"`
	DBConns     int     `json:"db_conns"`
	DeadlineMs  float64 `json:"deadline_ms"`
	Database    string  `json:"database"`
	Seed        uint64  `json:"seed"`
}

// StrategyResult is one strategy's summary and timeline.
type StrategyResult struct {
	Name     string   `json:"name"`
	Summary  Summary  `json:"summary"`
	Timeline []Second `json:"timeline"`
	// OutageRepeats holds, for every key that one instance queried more
	// than once during the outage, that instance's queries of it.
	OutageRepeats [][]keyLoad `json:"outage_repeats,omitempty"`
}

// Summary holds the numbers of the side-by-side table.
type Summary struct {
	HealthyDBQPS    float64  `json:"healthy_db_qps"`
	OutageDBQPS     float64  `json:"outage_db_qps"`
	OutageToHealthy *float64 `json:"outage_to_healthy"` // outage DB q/s ÷ healthy DB q/s; nil when healthy is 0
	PeakDBQPS       float64  `json:"peak_db_qps"`       // outside the warming phase
	Errors          uint64   `json:"errors"`            // outside the warming phase
	WarmingErrors   uint64   `json:"warming_errors"`
	OutageErrors    uint64   `json:"outage_errors"`
	// OutageMaxKeyQueries is the most database queries of one key, all
	// instances together, during the outage. cacheaside's in-process
	// cache bounds it by the instances: one load per key per instance.
	OutageMaxKeyQueries uint64 `json:"outage_max_key_queries"`
	// OutageRepeatedQueries counts the queries of the outage that one
	// instance made of a key it had already read from the database
	// during the outage, or was still reading (see repeated): the loads
	// that L1.OutageOnly's one load per key per instance leaves out.
	OutageRepeatedQueries uint64 `json:"outage_repeated_queries"`
	// DownGets counts the Gets the cache answered (on time or not) from
	// the moment Redis was killed to the moment the restarted Redis
	// answered, whatever seconds of the timeline that took, and
	// DownLocalHits those of them answered from the in-process cache.
	DownGets      uint64 `json:"down_gets"`
	DownLocalHits uint64 `json:"down_local_hits"`
	// ReturnedErrors counts the errors the strategy returned other than
	// the per-request deadline, outside the warming phase: what a caller
	// sees even on a machine with CPU to spare.
	ReturnedErrors  uint64  `json:"returned_errors"`
	P99HealthyMs    float64 `json:"p99_healthy_ms"`
	P99OutageMs     float64 `json:"p99_outage_ms"`
	P99RecoveryMs   float64 `json:"p99_recovery_ms"`
	DBP99OutageMs   float64 `json:"db_p99_outage_ms"` // the loader's own latency
	HitRatioHealthy float64 `json:"hit_ratio_healthy"`
	HitRatioOutage  float64 `json:"hit_ratio_outage"`
	// RecoverySeconds is the end, counted from the restart, of the first
	// second that ran wholly with Redis in use again (see RedisBackMs) and
	// whose hit ratio came back to the healthy average minus 2 points; nil
	// when none did. A second before that may owe its hits to the
	// in-process cache of the outage, and a second with no Gets counted
	// (all late on a starved machine) shows nothing either way.
	RecoverySeconds *int `json:"recovery_s"`
	// RecoveredHitRatio is the highest hit ratio of the seconds that
	// RecoverySeconds looks at (after Redis was in use again, with Gets);
	// nil when there were none. It says how far back the hit ratio came
	// when the machine left too little CPU for the 2 points.
	RecoveredHitRatio *float64 `json:"recovered_hit_ratio"`
	// RedisBackMs is how long after the restart every instance used Redis
	// again (textbook: a GET answered; cacheaside: its breaker closed); nil
	// when not within the run.
	RedisBackMs *float64 `json:"redis_back_ms"`
}

// Second is one strategy's second of the timeline.
type Second struct {
	T         int     `json:"t"`
	Phase     string  `json:"phase"`
	Requests  uint64  `json:"requests"`
	Gets      uint64  `json:"gets"` // requests ended in this second that the cache answered: hits + misses
	Errors    uint64  `json:"errors"`
	Shed      uint64  `json:"shed"`
	DBQueries uint64  `json:"db_queries"`
	HitRatio  float64 `json:"hit_ratio"`
	LocalHits uint64  `json:"local_hits"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
	Breakers  int     `json:"breakers_open"` // instances whose breaker was not closed
}

// recoveryMargin is how close to the healthy hit ratio counts as
// recovered.
const recoveryMargin = 0.02

// buildResult reduces the lanes' windows to the result. t0 is the start of
// the run, back the moment the restarted Redis answered (zero: never).
func buildResult(cfg Config, redisDesc string, lanes []*lane, t0, back time.Time) *Result {
	res := &Result{
		Params: Params{
			Instances: cfg.Instances, Keys: cfg.Keys, Rate: cfg.Rate,
			WarmS: secs(cfg.Warm), HealthyS: secs(cfg.Healthy), OutageS: secs(cfg.Outage), RecoveryS: secs(cfg.Recovery),
			DBLatencyMs: ms(cfg.DBLatency), DBConns: cfg.DBConns, DeadlineMs: ms(cfg.Deadline),
			Database: "simulated", Seed: cfg.Seed,
		},
		Redis: redisDesc,
	}
	if cfg.DatabaseURL != "" {
		res.Params.Database = "postgres"
	}
	restartAt := secs(cfg.Warm + cfg.Healthy + cfg.Outage)
	for _, l := range lanes {
		l.mu.Lock()
		sr := StrategyResult{Name: l.s.name()}
		type acc struct {
			secs, gets, hits, queries, errs uint64
			lat, dbLat                      []time.Duration
		}
		by := map[string]*acc{}
		for t, w := range l.win {
			ph := cfg.phaseOf(t)
			sr.Timeline = append(sr.Timeline, Second{
				T: t, Phase: ph, Requests: w.requests, Gets: w.counts.gets, Errors: w.errors, Shed: w.shed,
				DBQueries: w.dbQueries, HitRatio: ratio(w.counts.hits, w.counts.gets), LocalHits: w.counts.localHits,
				P50Ms: ms(percentile(slices.Clone(w.lat), 50)), P99Ms: ms(percentile(slices.Clone(w.lat), 99)),
				Breakers: w.counts.open,
			})
			a := by[ph]
			if a == nil {
				a = &acc{}
				by[ph] = a
			}
			a.secs++
			a.gets += w.counts.gets
			a.hits += w.counts.hits
			a.queries += w.dbQueries
			a.errs += w.errors
			a.lat = append(a.lat, w.lat...)
			a.dbLat = append(a.dbLat, w.dbLat...)
			if ph == phaseWarming {
				sr.Summary.WarmingErrors += w.errors
			} else {
				sr.Summary.Errors += w.errors
				sr.Summary.ReturnedErrors += w.returned
				sr.Summary.PeakDBQPS = max(sr.Summary.PeakDBQPS, float64(w.dbQueries))
			}
		}
		l.mu.Unlock()
		get := func(ph string) *acc {
			if a := by[ph]; a != nil {
				return a
			}
			return &acc{}
		}
		h, o, rc := get(phaseHealthy), get(phaseOutage), get(phaseRecovery)
		s := &sr.Summary
		s.HealthyDBQPS = perSec(h.queries, h.secs)
		s.OutageDBQPS = perSec(o.queries, o.secs)
		if s.HealthyDBQPS > 0 {
			v := s.OutageDBQPS / s.HealthyDBQPS
			s.OutageToHealthy = &v
		}
		s.OutageErrors = o.errs
		s.P99HealthyMs = ms(percentile(h.lat, 99))
		s.P99OutageMs = ms(percentile(o.lat, 99))
		s.P99RecoveryMs = ms(percentile(rc.lat, 99))
		s.DBP99OutageMs = ms(percentile(o.dbLat, 99))
		s.HitRatioHealthy = ratio(h.hits, h.gets)
		s.HitRatioOutage = ratio(o.hits, o.gets)
		if !back.IsZero() && l.backAfter > 0 {
			v := ms(l.backAfter)
			s.RedisBackMs = &v
			from := int(back.Add(l.backAfter).Sub(t0)/time.Second) + 1 // the first whole second
			for _, sec := range sr.Timeline[min(from, len(sr.Timeline)):] {
				if sec.Gets == 0 {
					continue
				}
				if s.RecoveredHitRatio == nil || sec.HitRatio > *s.RecoveredHitRatio {
					v := sec.HitRatio
					s.RecoveredHitRatio = &v
				}
				if s.RecoverySeconds == nil && sec.HitRatio >= s.HitRatioHealthy-recoveryMargin {
					n := sec.T - restartAt + 1
					s.RecoverySeconds = &n
				}
			}
		}
		res.Strategies = append(res.Strategies, sr)
	}
	return res
}

// strategy returns the result of the named strategy, or nil.
func (r *Result) strategy(name string) *StrategyResult {
	for i := range r.Strategies {
		if r.Strategies[i].Name == name {
			return &r.Strategies[i]
		}
	}
	return nil
}

func ratio(a, b uint64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func perSec(n, secs uint64) float64 {
	if secs == 0 {
		return 0
	}
	return float64(n) / float64(secs)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile returns the p-th percentile (0 < p ≤ 100) of ds, which it
// sorts, or 0 when ds is empty.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	i := int(math.Ceil(float64(len(ds))*p/100)) - 1
	return ds[min(max(i, 0), len(ds)-1)]
}

// l1Note says whether cacheaside's in-process cache was warm when Redis
// died, from what it answered in the first second of the outage.
func l1Note(cfg Config, res *Result) string {
	ca := res.strategy("cacheaside")
	kill := secs(cfg.Warm + cfg.Healthy)
	if ca == nil || kill >= len(ca.Timeline) {
		return ""
	}
	sec := ca.Timeline[kill]
	state := "cold"
	if ratio(sec.LocalHits, sec.Gets) >= 0.5 {
		state = "warm"
	}
	return fmt.Sprintf("cacheaside's L1 was %s when Redis died: in the first outage second it answered %d of %d Gets (%.0f%%); it is filled by Redis hits (the warming phase's included), by loads and by the prefill of the warm-up keys (L1.Prefill), each entry for %v",
		state, sec.LocalHits, sec.Gets, 100*ratio(sec.LocalHits, sec.Gets), localTTL)
}

// cacheAsideNotes summarises the cacheaside counters of the whole run.
func cacheAsideNotes(s cacheaside.Stats) string {
	return fmt.Sprintf("cacheaside counters: %d loads, %d fill locks taken, %d lock waits (%d ran out), %d Redis errors (%d calls skipped by the open breaker, %d abandoned at the Redis timeout), %d breaker openings, %d empty restarts detected, %d warm-ups writing %d keys",
		s.Loads, s.LockAcquired, s.LockWaits, s.LockWaitTimeouts, s.RedisErrors, s.RedisSkipped, s.Abandoned, s.BreakerOpens, s.RestartsDetected, s.WarmUps, s.Warmed)
}

// writeJSON writes the result to path.
func writeJSON(path string, res *Result) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
