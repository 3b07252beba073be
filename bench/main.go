// Command bench compares cacheaside with the textbook cache-aside read and
// with github.com/go-redis/cache/v9, in one run, on one redis-server of its
// own and one loader: the hit path, a hot key, a cold-key stampede across
// instances, Redis killed and frozen under load, and the hit path on a
// Redis Cluster of three primaries of its own. Every number is also
// given as a ratio to a raw go-redis GET + json.Unmarshal measured in the
// same run.
//
//	go run -C bench . [-duration 2s] [-rounds 3] [-goroutines 16] [-quick] [-only hit,hot,...] [-out results.md]
//
// The last measurement, -only avalanche, is an expiry avalanche: many
// warm keys expire at once under a steady stream of Gets over a database
// of few connections.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// The fixed shape of the measurements (the brief's numbers).
const (
	hotKey              = int64(0)
	hotGoroutines       = 64
	stampedeInstances   = 4
	stampedePerInstance = 64
	stampedeLoad        = 20 * time.Millisecond
	faultKeys           = 100
	faultWorkers        = 8
	faultLoad           = 5 * time.Millisecond   // a database query
	faultDeadline       = time.Second            // per request, in the frozen case
	warmup              = 500 * time.Millisecond // of each client's pool before the hit path
)

// config is what the flags set.
type config struct {
	duration      time.Duration // per hit-path and hot-key measurement
	faultDuration time.Duration // how long Redis stays killed or frozen
	rounds        int
	goroutines    int // hit path
	keys          int // hit path
	stampedeKeys  int
	avalancheKeys int           // warm keys that expire at once
	avalancheFor  time.Duration // how long Gets arrive in the avalanche
	quick         bool
	only          string // comma-separated measurements to run
	out           string
	command       string // as the user typed it, for the report
}

func defaults(quick bool) config {
	if quick {
		return config{duration: 150 * time.Millisecond, faultDuration: 1200 * time.Millisecond,
			rounds: 1, goroutines: 16, keys: 1000, stampedeKeys: 3,
			avalancheKeys: 1000, avalancheFor: 1500 * time.Millisecond, quick: true, only: allMeasurements}
	}
	return config{duration: 2 * time.Second, faultDuration: 3 * time.Second,
		rounds: 3, goroutines: 16, keys: 10_000, stampedeKeys: 20,
		avalancheKeys: 10_000, avalancheFor: 10 * time.Second, only: allMeasurements}
}

// allMeasurements names the measurements, in the order they run.
const allMeasurements = "hit,hot,stampede,killed,frozen,cluster,avalanche"

// runs reports whether the measurement called name was asked for.
func (c config) runs(name string) bool { return slices.Contains(strings.Split(c.only, ","), name) }

// parseFlags reads the flags. -quick changes the defaults; flags given
// explicitly win over it.
func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var c config
	fs.DurationVar(&c.duration, "duration", 0, "length of each hit-path and hot-key measurement (default 2s, -quick 150ms)")
	fs.DurationVar(&c.faultDuration, "fault-duration", 0, "how long Redis stays killed or frozen (default 3s, -quick 1.2s)")
	fs.IntVar(&c.rounds, "rounds", 0, "round-robin rounds of each measurement (default 3, -quick 1)")
	fs.IntVar(&c.goroutines, "goroutines", 0, "goroutines on the hit path (default 16)")
	fs.IntVar(&c.keys, "keys", 0, "warm keys on the hit path (default 10000, -quick 1000)")
	fs.IntVar(&c.stampedeKeys, "stampede-keys", 0, "cold keys stampeded per strategy (default 20, -quick 3)")
	fs.IntVar(&c.avalancheKeys, "avalanche-keys", 0, "warm keys that expire at once in the avalanche (default 10000, -quick 1000)")
	fs.DurationVar(&c.avalancheFor, "avalanche-duration", 0, "how long Gets arrive in the avalanche (default 10s, -quick 1.5s)")
	fs.BoolVar(&c.quick, "quick", false, "short mode, for tests")
	fs.StringVar(&c.only, "only", allMeasurements, "run only these measurements (comma-separated)")
	fs.StringVar(&c.out, "out", "", "also write the report to this file")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	d := defaults(c.quick)
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	pick := func(name string, v, def int64) int64 {
		if set[name] {
			return v
		}
		return def
	}
	c.duration = time.Duration(pick("duration", int64(c.duration), int64(d.duration)))
	c.faultDuration = time.Duration(pick("fault-duration", int64(c.faultDuration), int64(d.faultDuration)))
	c.rounds = int(pick("rounds", int64(c.rounds), int64(d.rounds)))
	c.goroutines = int(pick("goroutines", int64(c.goroutines), int64(d.goroutines)))
	c.keys = int(pick("keys", int64(c.keys), int64(d.keys)))
	c.stampedeKeys = int(pick("stampede-keys", int64(c.stampedeKeys), int64(d.stampedeKeys)))
	c.avalancheKeys = int(pick("avalanche-keys", int64(c.avalancheKeys), int64(d.avalancheKeys)))
	c.avalancheFor = time.Duration(pick("avalanche-duration", int64(c.avalancheFor), int64(d.avalancheFor)))
	var err error
	switch {
	case c.duration <= 0, c.faultDuration <= 0, c.avalancheFor <= 0:
		err = errors.New("-duration, -fault-duration and -avalanche-duration must be positive")
	case c.rounds < 1, c.goroutines < 1, c.keys < 1, c.stampedeKeys < 1, c.avalancheKeys < 1:
		err = errors.New("-rounds, -goroutines, -keys, -stampede-keys and -avalanche-keys must be at least 1")
	}
	for name := range strings.SplitSeq(c.only, ",") {
		if !slices.Contains(strings.Split(allMeasurements, ","), name) {
			err = fmt.Errorf("-only: unknown measurement %q; want some of %s", name, allMeasurements)
		}
	}
	if err != nil {
		fmt.Fprintln(fs.Output(), err)
		return config{}, err
	}
	return c, nil
}

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		os.Exit(2) // parseFlags has printed the problem
	}
	cfg.command = command(os.Args)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	_, err = run(ctx, cfg, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// command spells the invocation: `go run -C bench .` when run that way.
func command(args []string) string {
	prog := args[0]
	if strings.Contains(prog, "go-build") {
		prog = "go run -C bench ."
	} else {
		prog = filepath.Base(prog)
	}
	return strings.TrimSpace(prog + " " + strings.Join(args[1:], " "))
}

// env is what every measurement shares: the flags, the Redis server of the
// run and an admin client for INFO and CONFIG.
type env struct {
	cfg   config
	srv   *server
	admin *redis.Client
	log   io.Writer
}

func (e *env) progress(format string, args ...any) {
	fmt.Fprintf(e.log, "# "+format+"\n", args...)
}

// run does every measurement, writes the report to out (and to cfg.out)
// and returns it; progress goes to log. Every goroutine it starts has ended when
// it returns, and the redis-server processes it started are killed.
func run(ctx context.Context, cfg config, out, log io.Writer) (*report, error) {
	start := time.Now()
	r := &report{cfg: cfg, machine: describeMachine(ctx)}
	srv, err := startServer(ctx)
	if err != nil {
		return nil, err
	}
	defer srv.close()
	admin := redis.NewClient(&redis.Options{Addr: srv.addr()})
	defer admin.Close()
	e := &env{cfg: cfg, srv: srv, admin: admin, log: log}
	e.progress("redis-server pid %d on %s; %s", srv.cmd.Process.Pid, srv.addr(), r.machine)

	if cfg.runs("hit") {
		if r.hit, err = e.measureHit(ctx); err != nil {
			return nil, fmt.Errorf("hit path: %w", err)
		}
	}
	if cfg.runs("hot") {
		if r.hot, err = e.measureHot(ctx); err != nil {
			return nil, fmt.Errorf("hot key: %w", err)
		}
	}
	if cfg.runs("stampede") {
		if r.stampede, err = e.measureStampede(ctx); err != nil {
			return nil, fmt.Errorf("stampede: %w", err)
		}
	}
	if cfg.runs("killed") {
		if r.killed, err = e.measureFault(ctx, killed); err != nil {
			return nil, err
		}
	}
	if cfg.runs("frozen") {
		if r.frozen, err = e.measureFault(ctx, frozen); err != nil {
			return nil, err
		}
	}
	if cfg.runs("cluster") {
		if r.cluster, err = e.measureCluster(ctx); err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
	}
	if cfg.runs("avalanche") {
		if r.avalanche, err = e.measureAvalanche(ctx); err != nil {
			return nil, fmt.Errorf("avalanche: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.runtime = time.Since(start)
	md := r.markdown()
	if _, err := io.WriteString(out, md); err != nil {
		return nil, err
	}
	if cfg.out != "" {
		if err := os.WriteFile(cfg.out, []byte(md), 0o644); err != nil {
			return nil, err
		}
	}
	return r, nil
}
