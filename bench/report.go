package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// report is everything a run measured.
type report struct {
	cfg            config
	machine        string
	runtime        time.Duration
	hit            []hitResult
	hot            []hotResult
	stampede       []stampedeResult
	killed, frozen []faultResult
	avalanche      []avalancheResult
	cluster        []clusterResult
}

// describeMachine says what the numbers were measured on.
func describeMachine(ctx context.Context) string {
	return fmt.Sprintf("nproc %d (GOMAXPROCS %d), %s, %s %s/%s, %s",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), cpuModel(), runtime.Version(),
		runtime.GOOS, runtime.GOARCH, redisVersion(ctx))
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// markdown renders the report.
func (r *report) markdown() string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	c := r.cfg
	p("# cacheaside vs textbook cache-aside vs go-redis/cache")
	p("")
	p("- command: `%s`", r.cfg.command)
	p("- runtime: %s", r.runtime.Round(time.Second))
	p("- machine: %s", r.machine)
	p("- settings: -duration %s, -rounds %d, -goroutines %d, %d hit-path keys, %d stampede keys, fault window %s, avalanche of %d keys for %s%s",
		c.duration, c.rounds, c.goroutines, c.keys, c.stampedeKeys, c.faultDuration, c.avalancheKeys, c.avalancheFor, map[bool]string{true: " (-quick)"}[c.quick])
	p("")
	p("Every strategy reads through the same loader from a redis-server of our own on a loopback port: one server for")
	p("sections 1–3, a fresh one per strategy in sections 4–5. `× raw` is the ratio to the raw baseline (go-redis GET +")
	p("json.Unmarshal) measured in the same run. In sections 1–2 the strategies take turns of %s within each round,", sliceLen)
	p("and ratios are paired per round: median (min–max over %d rounds).", c.rounds)
	p("cacheaside runs with WithTTL(1h), WithRedisTimeout(%s), WithBreaker(%d, %s), WithLocalCache(%d, %s) throughout",
		redisTimeout, breakerFailures, breakerCooldown, localSize, localTTL)
	p("(the in-process cache is consulted only when Redis fails; the hit path also shows cacheaside without it).")
	p("go-redis/cache uses Once, its cache-aside call, with JSON as its codec like the others (its default is msgpack+s2);")
	p("its TinyLFU variant is local-first: hits on it never reach Redis.")
	p("")

	if r.hit != nil {
		r.hitTable(p)
	}
	if r.hot != nil {
		r.hotTable(p)
	}
	if r.stampede != nil {
		r.stampedeTable(p)
	}
	if r.killed != nil {
		r.faultTable(p, "4. Redis killed (kill -9)", r.killed,
			fmt.Sprintf("Redis is killed and stays down for the window; %d goroutines Get over %d warm keys, no deadline; loader takes %s.",
				faultWorkers, faultKeys, faultLoad))
	}
	if r.frozen != nil {
		r.faultTable(p, "5. Redis frozen (SIGSTOP)", r.frozen,
			fmt.Sprintf("Redis is stopped for the window, then continued (SIGCONT); %d goroutines Get over %d warm keys with a %s deadline each; "+
				"a request that returns an error or takes longer than the deadline is an error; loader takes %s.",
				faultWorkers, faultKeys, faultDeadline, faultLoad))
	}
	if r.avalanche != nil {
		r.avalancheTable(p)
	}
	if r.cluster != nil {
		r.clusterTable(p)
	}
	return b.String()
}

func (r *report) hitTable(p func(string, ...any)) {
	c := r.cfg
	p("## 1. Hit path: %d goroutines, %d warm keys (~%d-byte JSON values)", c.goroutines, c.keys, productSize())
	p("")
	p("ns/op is wall time per op over all goroutines (as `go test -bench` reports RunParallel). goroutines/op, allocs/op and CPU/op (user+system time of the")
	p("benchmark process, Redis excluded) count the whole process. The textbook read does exactly what the baseline does on a hit, so its spread is the noise floor.")
	p("")
	p("| client | strategy | ops/s | ns/op | × raw | goroutines/op | allocs/op | CPU µs/op | loads | errors | cacheaside counters |")
	p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	for _, h := range r.hit {
		ops := median(h.opsPerSec)
		p("| %s | %s | %s | %.0f | %s | %.2f | %.1f | %.1f | %d | %d | %s |", h.client, h.name, rate(ops),
			1e9/ops, spread(h.ratio), median(h.goroutinesPerOp), median(h.allocsPer), median(h.cpuPerOp), h.loads, h.errs, h.notes)
	}
	p("")
}

func (r *report) clusterTable(p func(string, ...any)) {
	c := r.cfg
	p("## 7. Redis Cluster (%d primaries): hit path, %d goroutines, %d warm keys", clusterPrimaries, c.goroutines, c.keys)
	p("")
	p("A go-redis ClusterClient on each client setup; cacheaside without its L1, so that every Get reads Redis. A read round trip is a GET, an MGET, or a pipeline")
	p("of MGETs (one per slot) to one node, counted by a hook on each node's client (as TestClusterGetManyOneRoundTripPerNode counts what each node receives).")
	p("")
	p("Loads on this path follow Redis calls that failed or ran past cacheaside's %s timeout (fail open: answered by the loader); they flatter its rate.", redisTimeout)
	p("")
	p("| client | strategy | ops/s | × raw | read round trips/op | keys/round trip | nodes read | loads | Redis calls failed or slow | errors |")
	p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, h := range r.cluster {
		failed := "—"
		if h.redisErrs >= 0 {
			failed = fmt.Sprint(h.redisErrs)
		}
		p("| %s | %s | %s | %s | %.3f | %.2f | %d | %d | %s | %d |", h.client, h.name, rate(median(h.opsPerSec)), spread(h.ratio),
			median(h.tripsPerOp), median(h.keysPerTrip), h.nodes, h.loads, failed, h.errs)
	}
	p("")
}

func (r *report) hotTable(p func(string, ...any)) {
	p("## 2. Hot key: %d goroutines on one warm key (default client)", hotGoroutines)
	p("")
	p("| strategy | ops/s | × raw | Redis GETs/op | all Redis commands/op | errors | cacheaside counters |")
	p("|---|---:|---:|---:|---:|---:|---|")
	for _, h := range r.hot {
		p("| %s | %s | %s | %.3f | %.3f | %d | %s |", h.name, rate(median(h.opsPerSec)), spread(h.ratio),
			median(h.getsPerOp), median(h.cmdsPerOp), h.errs, h.notes)
	}
	p("")
}

func (r *report) stampedeTable(p func(string, ...any)) {
	c := r.cfg
	p("## 3. Cold-key stampede: %d instances (own client each) × %d goroutines, one cold key, loader %s; %d keys",
		stampedeInstances, stampedePerInstance, stampedeLoad, c.stampedeKeys)
	p("")
	p("Latency is from the release of all %d goroutines to each one's answer. The raw baseline is a GET of the cold key (a miss, no load).",
		stampedeInstances*stampedePerInstance)
	p("")
	p("| strategy | loader calls/stampede: median | max | p50 | p99 | × raw p99 | errors |")
	p("|---|---:|---:|---:|---:|---:|---:|")
	base := r.stampede[0]
	for i, s := range r.stampede {
		loads, maxLoads := "—", "—"
		if i > 0 {
			loads, maxLoads = fmt.Sprintf("%g", median(s.loads)), fmt.Sprintf("%g", slices.Max(s.loads))
		}
		p("| %s | %s | %s | %s | %s | %s | %d |", s.name, loads, maxLoads, dur(pct(s.lat, 0.5)), dur(pct(s.lat, 0.99)),
			ratio(float64(pct(s.lat, 0.99)), float64(pct(base.lat, 0.99))), s.errs)
	}
	p("")
}

func (r *report) faultTable(p func(string, ...any), title string, rows []faultResult, about string) {
	p("## %s for %s", title, r.cfg.faultDuration)
	p("")
	p("%s Latencies and loader calls include the requests in flight when the window closed. Each strategy gets a fresh redis-server, warmed, then failed.", about)
	p("")
	p("| strategy | requests | × raw | errors | × raw | p50 | × raw | p99 | × raw | max | loader calls/s | cacheaside counters |")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	base := rows[0]
	for i, f := range rows {
		loads := "—"
		if i > 0 {
			loads = fmt.Sprintf("%.0f", float64(f.loads)/f.window.Seconds())
		}
		p("| %s | %d | %s | %d | %s | %s | %s | %s | %s | %s | %s | %s |", f.name,
			f.requests, ratio(float64(f.requests), float64(base.requests)),
			f.errs, ratio(float64(f.errs), float64(base.errs)),
			dur(pct(f.lat, 0.5)), ratio(float64(pct(f.lat, 0.5)), float64(pct(base.lat, 0.5))),
			dur(pct(f.lat, 0.99)), ratio(float64(pct(f.lat, 0.99)), float64(pct(base.lat, 0.99))),
			dur(pct(f.lat, 1)), loads, f.notes)
	}
	p("")
}

// productSize is the length of a Product's JSON.
func productSize() int {
	b, _ := json.Marshal(newProduct(4242))
	return len(b)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread renders per-round ratios as median (min–max).
func spread(ratios []float64) string {
	if len(ratios) == 1 {
		return fmt.Sprintf("%.2f×", ratios[0])
	}
	return fmt.Sprintf("%.2f× (%.2f–%.2f)", median(ratios), slices.Min(ratios), slices.Max(ratios))
}

// ratio renders v/base, or "—" when the baseline is zero.
func ratio(v, base float64) string {
	if base == 0 {
		return "—"
	}
	r := v / base
	switch {
	case r >= 100:
		return fmt.Sprintf("%.0f×", r)
	case r >= 0.01 || r == 0:
		return fmt.Sprintf("%.2f×", r)
	default:
		return fmt.Sprintf("%.1e×", r)
	}
}

func rate(opsPerSec float64) string {
	switch {
	case opsPerSec >= 1e6:
		return fmt.Sprintf("%.2fM", opsPerSec/1e6)
	case opsPerSec >= 1e3:
		return fmt.Sprintf("%.1fk", opsPerSec/1e3)
	}
	return fmt.Sprintf("%.0f", opsPerSec)
}

func dur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.1fµs", float64(d)/float64(time.Microsecond))
}
