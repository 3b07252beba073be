package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/testlog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(testlog.M(m)) }

// TestQuickRun runs the whole program in -quick mode against a real
// redis-server and checks the report: a row for every strategy in every
// table, and no error returned by cacheaside while Redis is killed or
// frozen. goleak (TestMain) checks that every goroutine ended.
func TestQuickRun(t *testing.T) {
	testlog.Attach(t)
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Fatalf("redis-server not found in PATH: install it with `apt-get install redis-server` (Redis 7+): %v", err)
	}
	out := filepath.Join(t.TempDir(), "results.md")
	cfg, err := parseFlags([]string{"-quick", "-out", out})
	if err != nil {
		t.Fatalf("parseFlags: %v", err)
	}
	cfg.command = "go test"
	// Only so that a hang fails the test: the quick run takes about 50s
	// alone and ran past 75s with two test suites at once on two cores.
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	var stdout bytes.Buffer
	r, err := run(ctx, cfg, &stdout, testLog{t})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	md := stdout.String()
	file, err := os.ReadFile(out)
	if err != nil || string(file) != md {
		t.Errorf("-out file = %q, %v; want the report printed on stdout", file, err)
	}

	sections := strings.Split(md, "\n## ")[1:]
	if len(sections) != 7 {
		t.Fatalf("report has %d sections, want 7:\n%s", len(sections), md)
	}
	for i, sec := range sections {
		title, _, _ := strings.Cut(sec, "\n")
		names := []string{}
		for _, k := range kinds {
			names = append(names, k.name)
		}
		if i == 5 {
			names = names[:0]
			for _, k := range avalancheKinds() {
				names = append(names, k.name)
			}
		}
		if i == 0 {
			names = append(names, nameCacheasideNoL1)
		}
		if i == 6 { // the Cluster: the baseline and cacheaside without L1
			names = []string{nameRaw, nameCacheasideNoL1}
		}
		if i == 3 || i == 4 {
			names = append(names, nameCacheaside+" (ContextTimeoutEnabled client)")
		}
		for _, name := range names {
			want := "| " + name + " |"
			if i == 0 || i == 6 {
				want = "| default " + want
			}
			if !strings.Contains(sec, want) {
				t.Errorf("section %q has no row %q:\n%s", title, want, sec)
			}
		}
	}

	for _, f := range [][]faultResult{r.killed, r.frozen} {
		for _, row := range f {
			if strings.HasPrefix(row.name, nameCacheaside) && (row.errs != 0 || row.requests == 0) {
				t.Errorf("%s: %d errors in %d requests, want 0 errors", row.name, row.errs, row.requests)
			}
		}
	}
	// cacheaside fails open: a Redis call past its 100ms budget (a busy
	// machine makes them: 33 in one run at a load average of 24) becomes a
	// load, not an error. Every load must follow such a call, but not
	// always a call of the same Cache: a strategy's caches on the two
	// clients share its keys, which only the first one warms, and a key
	// its warm-up left unwritten (a read past the budget loads without
	// writing) is loaded by whichever cache reads it first (seen: 13 to 58
	// loads on the ContextTimeoutEnabled client's cache, which had no
	// failed call, with two test suites at once). So loads and failed
	// calls are summed over the clients of each strategy.
	type tally struct{ loads, redisErrs int64 }
	shared := map[string]*tally{}
	var names []string
	for _, h := range r.hit {
		if h.redisErrs >= 0 {
			if h.errs != 0 {
				t.Errorf("hit path %s/%s: %d errors, want 0", h.client, h.name, h.errs)
			}
			if shared[h.name] == nil {
				shared[h.name] = &tally{}
				names = append(names, h.name)
			}
			shared[h.name].loads += h.loads
			shared[h.name].redisErrs += h.redisErrs
			continue
		}
		if h.errs != 0 || h.loads != 0 {
			t.Errorf("hit path %s/%s: %d errors, %d loads; want 0 and 0", h.client, h.name, h.errs, h.loads)
		}
	}
	for _, name := range names {
		if s := shared[name]; s.loads > s.redisErrs {
			t.Errorf("hit path %s, both clients: %d loads after %d failed Redis calls; want no load without a failed Redis call", name, s.loads, s.redisErrs)
		}
	}
	// On the Cluster every Get reads through one node, alone or batched:
	// never more than one read round trip per Get, and every node read.
	for _, c := range r.cluster {
		if c.errs != 0 || c.nodes != clusterPrimaries {
			t.Errorf("cluster %s/%s: %d errors, reads on %d nodes; want 0 errors and all %d nodes", c.client, c.name, c.errs, c.nodes, clusterPrimaries)
		}
		if trips := median(c.tripsPerOp); trips > 1 {
			t.Errorf("cluster %s/%s: %.3f read round trips per Get, want at most 1", c.client, c.name, trips)
		}
	}
	for _, a := range r.avalanche {
		if strings.HasPrefix(a.name, nameCacheaside) && (a.errs != 0 || a.gets == 0) {
			t.Errorf("avalanche %s: %d errors in %d Gets, want 0 errors (a slow database is not an outage)", a.name, a.errs, a.gets)
		}
	}
	for _, s := range r.stampede {
		if s.name == nameCacheaside && (median(s.loads) != 1 || s.errs != 0) {
			t.Errorf("stampede %s: %v loads per stampede, %d errors; want 1 and 0", s.name, s.loads, s.errs)
		}
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args    []string
		want    config
		wantErr bool
	}{
		{args: nil, want: defaults(false)},
		{args: []string{"-quick"}, want: defaults(true)},
		{args: []string{"-quick", "-rounds", "2", "-duration", "1s"}, want: func() config {
			c := defaults(true)
			c.rounds, c.duration = 2, time.Second
			return c
		}()},
		{args: []string{"-out", "r.md", "-goroutines", "4"}, want: func() config {
			c := defaults(false)
			c.out, c.goroutines = "r.md", 4
			return c
		}()},
		{args: []string{"-rounds", "0"}, wantErr: true},
		{args: []string{"-duration", "-1s"}, wantErr: true},
	}
	for _, tt := range tests {
		got, err := parseFlags(tt.args)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("parseFlags(%q) = %+v, %v; want %+v, error %v", tt.args, got, err, tt.want, tt.wantErr)
		}
	}
}

// testLog sends progress lines to t.Log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
