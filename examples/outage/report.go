package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// reporter prints the header, the live lines and the notes of a run.
type reporter struct {
	w   io.Writer
	cfg Config
}

func newReporter(w io.Writer, cfg Config) *reporter { return &reporter{w: w, cfg: cfg} }

func (r *reporter) header(redisDesc, dbDesc string) {
	c := r.cfg
	fmt.Fprintf(r.w, "Redis outage: textbook cache-aside vs cacheaside, same traffic, same Redis, one database each\n")
	fmt.Fprintf(r.w, "  fleet       %d instances per strategy, each its own *redis.Client with go-redis default options (only Addr set)\n", c.Instances)
	fmt.Fprintf(r.w, "  traffic     %.0f req/s per strategy, open loop (same key sequence for both); %d products, Zipf s=%.1f; deadline %v per request; at most %d in flight\n",
		c.Rate, c.Keys, zipfS, c.Deadline, c.maxInFlight())
	fmt.Fprintf(r.w, "  timeline    warming %v → healthy %v → Redis killed: outage %v → Redis back, empty: recovery %v  (%ds)\n",
		c.Warm, c.Healthy, c.Outage, c.Recovery, c.total())
	fmt.Fprintf(r.w, "  redis       %s\n", redisDesc)
	fmt.Fprintf(r.w, "  database    %s\n", dbDesc)
	fmt.Fprintf(r.w, "  textbook    GET; on redis.Nil or any error: query the database, then SET with TTL %v; no coalescing, no bounds\n", cacheTTL)
	fmt.Fprintf(r.w, "  cacheaside  %s\n", describeCacheAside(c.Keys))
	fmt.Fprintf(r.w, "  hit ratio   (Redis hits + L1 hits) / gets; an error counts as a request that failed or ran past the deadline\n\n")
}

// live prints second i of total of every lane, unless quiet. The progress bar
// leads the first lane's line; lines are plain, with no carriage returns,
// so that they read the same in a terminal, a pipe or a file.
func (r *reporter) live(i, total int, lanes []*lane) {
	if r.cfg.Quiet {
		return
	}
	prefix := fmt.Sprintf("%s %3ds/%ds %-8s", bar(i+1, total, 20), i+1, total, r.cfg.phaseOf(i))
	for k, l := range lanes {
		l.mu.Lock()
		w := l.win[i]
		lat := slices.Clone(w.lat)
		l.mu.Unlock()
		if k > 0 {
			prefix = strings.Repeat(" ", len([]rune(prefix)))
		}
		extra := ""
		if l.s.name() == "cacheaside" {
			extra = fmt.Sprintf("  L1 %5d  breaker open %d/%d", w.counts.localHits, w.counts.open, r.cfg.Instances)
		}
		fmt.Fprintf(r.w, "%s  %-10s  req %5d  db %5d q/s  hit %5.1f%%  err %4d  p50 %7s  p99 %7s%s\n",
			prefix, l.s.name(), w.requests, w.dbQueries, 100*ratio(w.counts.hits, w.counts.gets), w.errors,
			fmtMs(percentile(lat, 50)), fmtMs(percentile(lat, 99)), extra)
	}
}

// bar draws a progress bar of done out of total steps.
func bar(done, total, width int) string {
	n := done * width / max(total, 1)
	s := strings.Repeat("=", n)
	if n < width {
		s += ">" + strings.Repeat(" ", width-n-1)
	}
	return "[" + s + "]"
}

func (r *reporter) note(s string) {
	if !r.cfg.Quiet {
		fmt.Fprintf(r.w, "  ── %s\n", s)
	}
}

// fmtMs prints a latency with precision that suits its size.
func fmtMs(d time.Duration) string {
	switch m := ms(d); {
	case m >= 100:
		return fmt.Sprintf("%.0fms", m)
	case m >= 10:
		return fmt.Sprintf("%.1fms", m)
	default:
		return fmt.Sprintf("%.2fms", m)
	}
}

// printSummary prints the side-by-side table and the notes.
func printSummary(w io.Writer, res *Result) {
	tb, ca := res.strategy("textbook"), res.strategy("cacheaside")
	if tb == nil || ca == nil {
		return
	}
	a, b := tb.Summary, ca.Summary
	fmt.Fprintf(w, "\nSummary (%d instances, %.0f req/s per strategy, %d keys; the warming phase is left out)\n\n", res.Params.Instances, res.Params.Rate, res.Params.Keys)
	tw := tabwriter.NewWriter(w, 0, 0, 3, ' ', tabwriter.AlignRight)
	row := func(label, x, y string) { fmt.Fprintf(tw, "%s\t%s\t%s\t\n", label, x, y) }
	ms := func(v float64) string { return fmtMs(time.Duration(v * float64(time.Millisecond))) }
	pct := func(v float64) string { return fmt.Sprintf("%.1f%%", 100*v) }
	times := func(v *float64) string {
		if v == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.1f×", *v)
	}
	back := func(v *float64) string {
		if v == nil {
			return "not within the run"
		}
		return fmtMs(time.Duration(*v * float64(time.Millisecond)))
	}
	rec := func(n *int) string {
		if n == nil {
			return "not within the run"
		}
		return fmt.Sprintf("%ds", *n)
	}
	row("", "textbook", "cacheaside")
	row("DB queries/s, healthy", fmt.Sprintf("%.1f", a.HealthyDBQPS), fmt.Sprintf("%.1f", b.HealthyDBQPS))
	row("DB queries/s, outage", fmt.Sprintf("%.1f", a.OutageDBQPS), fmt.Sprintf("%.1f", b.OutageDBQPS))
	row("  outage ÷ healthy", times(a.OutageToHealthy), times(b.OutageToHealthy))
	row("most DB queries of one key, outage", fmt.Sprint(a.OutageMaxKeyQueries), fmt.Sprint(b.OutageMaxKeyQueries))
	row("  a key again by the same instance", fmt.Sprint(a.OutageRepeatedQueries), fmt.Sprint(b.OutageRepeatedQueries))
	row("peak DB queries/s", fmt.Sprintf("%.0f", a.PeakDBQPS), fmt.Sprintf("%.0f", b.PeakDBQPS))
	row("errors, total", fmt.Sprint(a.Errors), fmt.Sprint(b.Errors))
	row("errors, during outage", fmt.Sprint(a.OutageErrors), fmt.Sprint(b.OutageErrors))
	row("errors, warming (not in the total)", fmt.Sprint(a.WarmingErrors), fmt.Sprint(b.WarmingErrors))
	row("p99 latency, healthy", ms(a.P99HealthyMs), ms(b.P99HealthyMs))
	row("p99 latency, outage", ms(a.P99OutageMs), ms(b.P99OutageMs))
	row("p99 latency, recovery", ms(a.P99RecoveryMs), ms(b.P99RecoveryMs))
	row("p99 DB query, outage", ms(a.DBP99OutageMs), ms(b.DBP99OutageMs))
	row("hit ratio, healthy", pct(a.HitRatioHealthy), pct(b.HitRatioHealthy))
	row("hit ratio, outage", pct(a.HitRatioOutage), pct(b.HitRatioOutage))
	row("Redis in use again after restart", back(a.RedisBackMs), back(b.RedisBackMs))
	row("hit ratio back to healthy−2pt after restart", rec(a.RecoverySeconds), rec(b.RecoverySeconds))
	_ = tw.Flush()
	fmt.Fprintln(w)
	for _, n := range res.Notes {
		fmt.Fprintf(w, "  %s\n", n)
	}
	fmt.Fprintf(w, "  ran %.1fs; Redis answered %.0fms after the restart began\n", res.RunSeconds, res.RestartMs)
}
