package pgtest_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/cacheaside/cacheaside/integration/pgtest"
)

// TestMain fails the package if any test leaves goroutines behind. No
// third-party goroutine is ignored: every pgxpool is closed in a cleanup,
// which also stops its background health checker.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestURLDefaultAndOverride(t *testing.T) {
	t.Setenv(pgtest.EnvURL, "")
	if got := pgtest.URL(); got != "postgres://postgres@127.0.0.1:5432/test?sslmode=disable" {
		t.Fatalf("URL() without %s = %q", pgtest.EnvURL, got)
	}
	t.Setenv(pgtest.EnvURL, "postgres://root@127.0.0.1:5432/root?sslmode=disable")
	if got := pgtest.URL(); got != "postgres://root@127.0.0.1:5432/root?sslmode=disable" {
		t.Fatalf("URL() with %s set = %q", pgtest.EnvURL, got)
	}
}

func TestTableInsertSelect(t *testing.T) {
	pool := pgtest.Pool(t)
	ctx := context.Background()
	table := pgtest.Table(t, pool, "id bigint primary key, name text not null, price_cents bigint not null")

	if !regexp.MustCompile(`^t_[a-z0-9_]+_[0-9a-f]{8}$`).MatchString(table) || len(table) > 63 {
		t.Fatalf("table name %q is not a plain identifier of at most 63 bytes", table)
	}
	if !strings.HasPrefix(table, "t_testtableinsertselect_") {
		t.Errorf("table name %q does not mention the test", table)
	}

	if _, err := pool.Exec(ctx, "INSERT INTO "+table+" (id, name, price_cents) VALUES ($1, $2, $3)", 1, "widget", 1999); err != nil {
		t.Fatalf("insert: %v", err)
	}
	var (
		name  string
		price int64
	)
	err := pool.QueryRow(ctx, "SELECT name, price_cents FROM "+table+" WHERE id = $1", 1).Scan(&name, &price)
	if err != nil || name != "widget" || price != 1999 {
		t.Fatalf("select = %q, %d, %v; want widget, 1999", name, price, err)
	}
	err = pool.QueryRow(ctx, "SELECT name FROM "+table+" WHERE id = $1", 2).Scan(&name)
	if !errors.Is(err, pgx.ErrNoRows) {
		t.Fatalf("select missing row: err = %v; want pgx.ErrNoRows", err)
	}
}

func TestTableIsDroppedAndNamesAreUnique(t *testing.T) {
	pool := pgtest.Pool(t)
	ctx := context.Background()
	var names []string
	longName := "sub/with spaces & UPPER " + strings.Repeat("x", 100)
	for range 2 {
		t.Run(longName, func(t *testing.T) {
			names = append(names, pgtest.Table(t, pool, "id int"))
		})
	}
	if len(names) != 2 || names[0] == names[1] {
		t.Fatalf("table names %q are not unique", names)
	}
	for _, n := range names {
		if len(n) > 63 {
			t.Errorf("table name %q is longer than 63 bytes", n)
		}
		var exists bool
		if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", n).Scan(&exists); err != nil {
			t.Fatalf("to_regclass(%s): %v", n, err)
		}
		if exists {
			t.Errorf("table %s still exists after its test finished", n)
		}
	}
}

func TestPoolFailsWithInstallHint(t *testing.T) {
	// Port 1 on loopback is never a PostgreSQL server; the password must
	// not show up in the failure message.
	t.Setenv(pgtest.EnvURL, "postgres://postgres:s3cret@127.0.0.1:1/test?sslmode=disable&connect_timeout=2")
	ft := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		pgtest.Pool(ft)
	}()
	<-done
	for _, want := range []string{"127.0.0.1:1", pgtest.EnvURL, "apt-get install postgresql", "createdb test"} {
		if !strings.Contains(ft.msg, want) {
			t.Errorf("failure message does not mention %q:\n%s", want, ft.msg)
		}
	}
	if strings.Contains(ft.msg, "s3cret") {
		t.Errorf("failure message leaks the password:\n%s", ft.msg)
	}
}

// fatalRecorder captures the message of a Fatalf and stops the goroutine,
// without failing the real test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fatalRecorder) Helper() {}
