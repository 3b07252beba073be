// Command outage is the cacheaside demo and the measurement program for a
// Redis outage. It serves the same open-loop product traffic through two
// cache-aside strategies at once, the textbook pattern and cacheaside,
// kills Redis in the middle, brings it back empty, and reports what each
// strategy did to the database, to errors and to latency, second by
// second and side by side.
//
// Run it from the repository root with
//
//	go run -C examples/outage .
//
// It needs nothing but Go: it starts its own redis-server when one is
// installed, and an in-process miniredis otherwise. Flags (see -h) set the
// load, the timeline, the database (simulated, or PostgreSQL with
// -database-url) and the Redis (-redis host:port puts a proxy in front of
// an existing one instead of killing it).
//
// It writes the chart of database queries per second to outage.svg in the
// directory it runs in (examples/outage with the command above; -svg sets
// another path) and prints the chart's absolute path at the end.
// docs/outage.svg in the repository is the chart of the run the README
// reports.
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
	"syscall"
)

// outputs are where the results go besides stdout.
type outputs struct {
	svg  string // "" to skip
	json string // "" to skip
}

// parseFlags reads the command line into a Config.
func parseFlags(args []string, stderr io.Writer) (Config, outputs, error) {
	cfg := defaultConfig()
	out := outputs{svg: "outage.svg"}
	fs := flag.NewFlagSet("outage", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: go run -C examples/outage . [flags]\n\n"+
			"Serves the same traffic through textbook cache-aside and cacheaside, kills Redis,\n"+
			"restarts it empty, and compares database load, errors, latency and recovery.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.IntVar(&cfg.Instances, "instances", cfg.Instances, "cache instances per strategy, each with its own Redis client")
	fs.IntVar(&cfg.Keys, "keys", cfg.Keys, "number of products; popularity follows a Zipf law (s=1.1)")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "requests per second per strategy, spread over the instances (open loop)")
	fs.DurationVar(&cfg.Warm, "warm", cfg.Warm, "warming phase before the healthy one, not in the summary (whole seconds; 0 for none)")
	fs.DurationVar(&cfg.Healthy, "healthy", cfg.Healthy, "healthy phase (whole seconds)")
	fs.DurationVar(&cfg.Outage, "outage", cfg.Outage, "how long Redis stays down (whole seconds)")
	fs.DurationVar(&cfg.Recovery, "recovery", cfg.Recovery, "recovery phase after Redis comes back empty (whole seconds, from the second the restarted Redis answers in)")
	fs.DurationVar(&cfg.DBLatency, "db-latency", cfg.DBLatency, "query latency of the simulated database, ±25% jitter")
	fs.IntVar(&cfg.DBConns, "db-conns", cfg.DBConns, "connections of each strategy's database; queries wait for one")
	fs.DurationVar(&cfg.Deadline, "deadline", cfg.Deadline, "per-request deadline, like an HTTP handler timeout; later is an error")
	fs.StringVar(&cfg.RedisAddr, "redis", "", "host:port of an existing Redis to use through a local proxy, which is what gets \"killed\"; only the demo's keys are deleted (default: start redis-server, or miniredis if it is missing)")
	fs.StringVar(&cfg.DatabaseURL, "database-url", "", "postgres:// URL: use PostgreSQL instead of the simulated database (table "+pgTable+")")
	fs.BoolVar(&cfg.Miniredis, "miniredis", false, "use the in-process miniredis even when redis-server is installed")
	fs.StringVar(&out.svg, "svg", out.svg, "write the DB queries/s timeline as an SVG chart to this path; '' to skip")
	fs.Uint64Var(&cfg.Seed, "seed", cfg.Seed, "seed of the key sequence")
	fs.StringVar(&out.json, "json", "", "write the summary and timeline as JSON to this path")
	fs.BoolVar(&cfg.Quiet, "quiet", false, "no live lines, only the header and the summary")
	if err := fs.Parse(args); err != nil {
		return cfg, out, err
	}
	if fs.NArg() > 0 {
		return cfg, out, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	if cfg.RedisAddr != "" && cfg.Miniredis {
		return cfg, out, errors.New("-redis and -miniredis exclude each other")
	}
	return cfg, out, cfg.validate()
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := realMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// realMain runs the program and returns its exit code.
func realMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, out, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "outage: %v\n", err)
		return 2
	}
	res, err := run(ctx, cfg, stdout)
	if err != nil {
		fmt.Fprintf(stderr, "outage: %v\n", err)
		return 1
	}
	printSummary(stdout, res)
	if out.svg != "" {
		if err := writeSVG(out.svg, res); err != nil {
			fmt.Fprintf(stderr, "outage: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "  chart: %s\n", absPath(out.svg))
	}
	if out.json != "" {
		if err := writeJSON(out.json, res); err != nil {
			fmt.Fprintf(stderr, "outage: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "  json: %s\n", absPath(out.json))
	}
	return 0
}

// absPath returns path made absolute, or path itself if that fails: the
// user sees where a file went whatever directory go run -C started in.
func absPath(path string) string {
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}
