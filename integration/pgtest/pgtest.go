// Package pgtest gives tests a PostgreSQL connection pool and throwaway
// tables.
//
// Tests connect to the database named by the CACHEASIDE_TEST_DATABASE_URL
// environment variable, or to a local server at 127.0.0.1:5432 by default.
// When the database cannot be reached, Pool fails the test with instructions
// for installing and preparing PostgreSQL instead of skipping, so a
// misconfigured machine never passes silently.
package pgtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// EnvURL is the environment variable that overrides the test database URL.
const EnvURL = "CACHEASIDE_TEST_DATABASE_URL"

// DefaultURL is the database used when EnvURL is unset: the "test" database
// of a local server, as the postgres role, without TLS.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// connectTimeout bounds connecting and pinging in Pool.
const connectTimeout = 5 * time.Second

// ddlTimeout bounds CREATE TABLE and DROP TABLE in Table.
const ddlTimeout = 10 * time.Second

// maxIdentLen is PostgreSQL's identifier length limit (NAMEDATALEN - 1).
const maxIdentLen = 63

// URL returns the value of CACHEASIDE_TEST_DATABASE_URL if it is set and
// otherwise DefaultURL.
func URL() string {
	if u := strings.TrimSpace(os.Getenv(EnvURL)); u != "" {
		return u
	}
	return DefaultURL
}

// Pool connects to the test database, checks the connection with a ping and
// registers a cleanup that closes the pool. Connecting and pinging together
// may take at most five seconds. If the database is unreachable, Pool fails
// the test with a message naming the URL, the environment variable and the
// steps to install and prepare PostgreSQL.
func Pool(tb testing.TB) *pgxpool.Pool {
	tb.Helper()
	connString := URL()
	ctx, cancel := context.WithTimeout(context.Background(), connectTimeout)
	defer cancel()
	pool, err := pgxpool.New(ctx, connString)
	if err != nil {
		tb.Fatalf("pgtest: invalid database URL %q: %v\n%s", redact(connString), err, help())
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		tb.Fatalf("pgtest: cannot reach PostgreSQL at %q: %v\n%s", redact(connString), err, help())
	}
	tb.Cleanup(pool.Close)
	return pool
}

// Table creates a new table with the given column definitions, such as
// "id bigint primary key, name text not null", and returns its name. The
// name is derived from the test name plus a random suffix, so concurrent
// tests and repeated runs never collide. It consists only of lower-case
// letters, digits and underscores and can be used in SQL without quoting.
// The table is dropped when tb finishes; a failed drop is reported as a test
// error.
func Table(tb testing.TB, pool *pgxpool.Pool, columns string) string {
	tb.Helper()
	name := tableName(tb.Name())
	ctx, cancel := context.WithTimeout(context.Background(), ddlTimeout)
	defer cancel()
	if _, err := pool.Exec(ctx, fmt.Sprintf("CREATE TABLE %s (%s)", name, columns)); err != nil {
		tb.Fatalf("pgtest: create table %s (%s): %v", name, columns, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), ddlTimeout)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP TABLE IF EXISTS "+name); err != nil {
			tb.Errorf("pgtest: drop table %s: %v", name, err)
		}
	})
	return name
}

// tableName turns a test name into a safe, unique PostgreSQL identifier:
// "t_", the sanitized test name cut to fit, "_" and eight hex digits.
func tableName(testName string) string {
	const prefix, suffixLen = "t_", 1 + 8
	var b strings.Builder
	lastUnderscore := true // avoids a double underscore after the prefix
	for _, r := range strings.ToLower(testName) {
		ok := (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9')
		switch {
		case ok:
			b.WriteRune(r)
			lastUnderscore = false
		case !lastUnderscore:
			b.WriteByte('_')
			lastUnderscore = true
		}
	}
	base := strings.TrimRight(b.String(), "_")
	if limit := maxIdentLen - len(prefix) - suffixLen; len(base) > limit {
		base = strings.TrimRight(base[:limit], "_")
	}
	if base == "" {
		base = "test"
	}
	return fmt.Sprintf("%s%s_%08x", prefix, base, rand.Uint32())
}

// help explains how to make a database available to the tests.
func help() string {
	return fmt.Sprintf(`Tests need PostgreSQL. Either set %[1]s to a reachable database URL, or provide the default %[2]q:
  apt-get install postgresql        # PostgreSQL 15 or newer
  service postgresql start          # or: pg_ctlcluster 15 main start
  su postgres -c "createdb test"    # the role needs trust or password auth on 127.0.0.1
Then run the tests again, for example: %[1]s=%[2]q go test ./...`, EnvURL, DefaultURL)
}

// redact hides a password in a URL or keyword/value connection string so
// that it does not end up in test logs.
func redact(connString string) string {
	if u, err := url.Parse(connString); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	return passwordKV.ReplaceAllString(connString, "${1}xxxxx")
}

var passwordKV = regexp.MustCompile(`(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)
