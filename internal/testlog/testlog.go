// Package testlog keeps the log lines of libraries out of the output of
// passing tests, and shows them for failing ones.
//
// go-redis logs through one process-wide logger (redis.SetLogger), by
// default to stderr: "connection pool: failed to dial" and the like, which
// fault tests provoke on purpose by the hundred. [M] routes that logger to
// the log of the test that is running ([Attach]), which `go test` prints
// only when that test fails (or with -v). Lines logged while no test is
// attached are kept (the last [keep] of them) and printed after the run if
// it failed.
//
// Tests in this repository do not call t.Parallel, so the test that was
// attached last is the one that is running.
package testlog

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
)

// keep bounds the lines kept while no test is attached.
const keep = 200

// router is the go-redis logger: it writes to the attached test's log.
type router struct {
	mu       sync.Mutex
	attached []testing.TB // a stack: subtests attach over their parent
	orphans  []string     // lines logged with no test attached, oldest first
	dropped  int          // orphans dropped to keep the last keep
}

var logs router

// Printf implements go-redis's Logging.
func (r *router) Printf(_ context.Context, format string, v ...any) {
	line := fmt.Sprintf(format, v...)
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := len(r.attached); n > 0 {
		// Under mu: Attach's cleanup detaches under mu before the test
		// completes, so the test is still running here.
		r.attached[n-1].Logf("go-redis: %s", line)
		return
	}
	if len(r.orphans) == keep {
		r.orphans = r.orphans[1:]
		r.dropped++
	}
	r.orphans = append(r.orphans, line)
}

// Attach sends the go-redis log lines to tb's log until tb ends. Test
// helpers that build a client or a cache call it, so a test needs not.
// Attaching a test that is already attached does nothing.
func Attach(tb testing.TB) {
	logs.mu.Lock()
	defer logs.mu.Unlock()
	for _, a := range logs.attached {
		if a == tb {
			return
		}
	}
	logs.attached = append(logs.attached, tb)
	tb.Cleanup(func() {
		logs.mu.Lock()
		defer logs.mu.Unlock()
		for i, a := range logs.attached {
			if a == tb {
				logs.attached = append(logs.attached[:i], logs.attached[i+1:]...)
				break
			}
		}
	})
}

// runner is what M returns: a testing.M whose Run routes the logs.
type runner struct{ m *testing.M }

// M wraps m for TestMain: its Run installs the router as go-redis's
// logger, runs the tests and, if they failed, prints the lines logged
// while no test was attached. Use it as goleak.VerifyTestMain(testlog.M(m))
// or os.Exit(testlog.M(m).Run()).
func M(m *testing.M) interface{ Run() int } { return runner{m} }

func (r runner) Run() int {
	redis.SetLogger(&logs)
	code := r.m.Run()
	if code != 0 {
		logs.mu.Lock()
		defer logs.mu.Unlock()
		if len(logs.orphans) > 0 {
			fmt.Fprintf(os.Stderr, "testlog: go-redis logged %d lines outside any test (%d older ones dropped):\n", len(logs.orphans), logs.dropped)
			for _, l := range logs.orphans {
				fmt.Fprintf(os.Stderr, "  go-redis: %s\n", l)
			}
		}
	}
	return code
}
