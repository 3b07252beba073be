package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/integration/pgtest"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/cacheaside/cacheaside/internal/testlog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(testlog.M(m)) }

// TestRun runs the example against a redis-server of its own and the local
// PostgreSQL, and checks what it prints.
func TestRun(t *testing.T) {
	testlog.Attach(t)
	srv := redistest.Start(t)
	pgtest.Pool(t) // fails with an install hint when PostgreSQL is missing
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out bytes.Buffer
	// A 5s Redis timeout, as in the root package's tests: on a loaded
	// machine a fill can take longer than the default 100ms, and the
	// cache then rightly loads again instead of hitting ("0 hits"), which
	// is not what this test is about.
	if err := run(ctx, &out, srv.Addr(), pgtest.URL(), cacheaside.WithRedisTimeout(5*time.Second)); err != nil {
		t.Fatalf("run() = %v\noutput:\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{"product 1: teapot", "after the update: teapot", "product 999999: not found", "1 hits"} {
		if !strings.Contains(got, want) {
			t.Errorf("run() printed %q, want it to contain %q", got, want)
		}
	}
}
