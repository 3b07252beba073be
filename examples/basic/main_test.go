package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/integration/pgtest"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/cacheaside/cacheaside/internal/testlog"
	"github.com/jackc/pgx/v5/pgxpool"
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

// TestSeedConcurrent: runs of the example that start at once on a database
// without the table (two test suites at once on a new machine) all seed
// it. Two CREATE TABLE IF NOT EXISTS at once can both find the table
// missing, and the second then fails on PostgreSQL's catalog ("duplicate
// key value violates unique constraint pg_type_typname_nsp_index"). Each
// round seeds a schema of its own (search_path), so that the example's
// table of other runs is never touched.
func TestSeedConcurrent(t *testing.T) {
	admin := pgtest.Pool(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const rounds, runs = 5, 8
	for r := range rounds {
		schema := fmt.Sprintf("t_seed_%08x", rand.Uint32())
		if _, err := admin.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
			t.Fatalf("CREATE SCHEMA: %v", err)
		}
		t.Cleanup(func() {
			if _, err := admin.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE"); err != nil {
				t.Errorf("DROP SCHEMA %s: %v", schema, err)
			}
		})
		cfg, err := pgxpool.ParseConfig(pgtest.URL())
		if err != nil {
			t.Fatal(err)
		}
		cfg.ConnConfig.RuntimeParams["search_path"] = schema
		cfg.MaxConns = runs
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		// Connected before the seeds start, so that they start together.
		conns := make([]*pgxpool.Conn, runs)
		for i := range conns {
			if conns[i], err = pool.Acquire(ctx); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range conns {
			c.Release()
		}
		errs := make([]error, runs)
		var wg sync.WaitGroup
		for i := range runs {
			wg.Go(func() { errs[i] = seed(ctx, pool) })
		}
		wg.Wait()
		var n int
		err = pool.QueryRow(ctx, "SELECT count(*) FROM cacheaside_basic_products").Scan(&n)
		pool.Close()
		for i, err := range errs {
			if err != nil {
				t.Errorf("round %d: seed %d of %d at once = %v, want nil", r, i, runs, err)
			}
		}
		if err != nil || n != 3 {
			t.Fatalf("round %d: %d rows in %s.cacheaside_basic_products (%v), want 3", r, n, schema, err)
		}
	}
}
