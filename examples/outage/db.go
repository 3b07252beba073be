package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Product is the row the demo caches: what a product page would show.
type Product struct {
	ID         int64  `json:"id"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
}

// errNoProduct is returned by a database for an id that has no row.
var errNoProduct = errors.New("no such product")

// database is the source of truth behind one strategy. Each strategy gets
// its own, so that one strategy's stampede does not slow the other down.
type database interface {
	// product reads one row. It returns errNoProduct when the id has no
	// row, and ctx.Err() when ctx ends while it waits for a connection.
	product(ctx context.Context, id int64) (Product, error)
	// queries returns how many queries have started so far: those that
	// got a connection, whatever their outcome.
	queries() uint64
	close()
}

// meteredDB records how long each call of the database it wraps took,
// waiting for a connection included, so that the report can compare the
// latency of a cached Get with that of the loader it falls back on.
type meteredDB struct {
	database
	mu     sync.Mutex
	lat    []time.Duration // since the last drain
	perKey keyLoads        // the calls of each key during the outage
}

func (m *meteredDB) product(ctx context.Context, id int64) (Product, error) {
	end := m.perKey.begin(ctx, id)
	start := time.Now()
	p, err := m.database.product(ctx, id)
	end(err)
	if err == nil || errors.Is(err, errNoProduct) {
		d := time.Since(start)
		m.mu.Lock()
		m.lat = append(m.lat, d)
		m.mu.Unlock()
	}
	return p, err
}

// countKeys starts recording the calls of each key, from zero.
func (m *meteredDB) countKeys() { m.perKey.start() }

// mostPerKey stops recording the calls of each key and returns what
// keyLoads.stop says of them since countKeys.
func (m *meteredDB) mostPerKey() (most, repeats uint64, calls [][]keyLoad) {
	return m.perKey.stop()
}

// drain returns the latencies of the calls that answered since the last
// drain.
func (m *meteredDB) drain() []time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := m.lat
	m.lat = nil
	return out
}

// simDB is an in-process database: every query holds one of a fixed
// number of connections for a jittered latency, like a real database
// under a connection pool limit.
type simDB struct {
	keys    int64
	latency time.Duration
	conns   chan struct{} // a semaphore: one token per connection
	n       atomic.Uint64
}

func newSimDB(keys int, latency time.Duration, conns int) *simDB {
	return &simDB{keys: int64(keys), latency: latency, conns: make(chan struct{}, conns)}
}

func (d *simDB) product(ctx context.Context, id int64) (Product, error) {
	select {
	case d.conns <- struct{}{}:
	case <-ctx.Done():
		return Product{}, ctx.Err()
	}
	defer func() { <-d.conns }()
	d.n.Add(1)
	// ±25% jitter around the configured latency.
	wait := time.Duration(float64(d.latency) * (0.75 + 0.5*rand.Float64()))
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return Product{}, ctx.Err()
	}
	if id < 1 || id > d.keys {
		return Product{}, errNoProduct
	}
	return productRow(id), nil
}

func (d *simDB) queries() uint64 { return d.n.Load() }
func (d *simDB) close()          {}

// productRow is the content of row id, the same in the simulated and the
// PostgreSQL database.
func productRow(id int64) Product {
	return Product{ID: id, Name: fmt.Sprintf("product %d", id), PriceCents: 100 + (id*37)%10000}
}

// pgTable is the table the PostgreSQL database reads. Both strategies read
// the same rows through pools of their own.
const pgTable = "cacheaside_outage_products"

// pgDB reads products from PostgreSQL through a pool of its own.
type pgDB struct {
	pool *pgxpool.Pool
	n    atomic.Uint64
}

// newPostgresDB connects to url with at most conns connections, creates
// the products table if it is missing and makes sure it holds rows 1 to
// keys.
func newPostgresDB(ctx context.Context, url string, keys, conns int) (*pgDB, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("database url: %w", err)
	}
	cfg.MaxConns = int32(conns)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to postgres: %w", err)
	}
	if err := seedPostgres(ctx, pool, keys); err != nil {
		pool.Close()
		return nil, err
	}
	return &pgDB{pool: pool}, nil
}

// seedPostgres creates the table and inserts the rows that are missing.
// An advisory lock keeps concurrent runs from racing on CREATE TABLE.
func seedPostgres(ctx context.Context, pool *pgxpool.Pool, keys int) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		stmts := []string{
			`SELECT pg_advisory_xact_lock(hashtext('` + pgTable + `'))`,
			`CREATE TABLE IF NOT EXISTS ` + pgTable + ` (id bigint PRIMARY KEY, name text NOT NULL, price_cents bigint NOT NULL)`,
			`INSERT INTO ` + pgTable + ` (id, name, price_cents)
			 SELECT g, 'product ' || g, 100 + (g * 37) % 10000 FROM generate_series(1, $1::bigint) AS g
			 ON CONFLICT (id) DO NOTHING`,
		}
		for i, s := range stmts {
			var args []any
			if i == len(stmts)-1 {
				args = []any{keys}
			}
			if _, err := tx.Exec(ctx, s, args...); err != nil {
				return fmt.Errorf("seed postgres table %s: %w", pgTable, err)
			}
		}
		return nil
	})
}

func (d *pgDB) product(ctx context.Context, id int64) (Product, error) {
	conn, err := d.pool.Acquire(ctx)
	if err != nil {
		return Product{}, err
	}
	defer conn.Release()
	d.n.Add(1)
	p := Product{ID: id}
	err = conn.QueryRow(ctx, `SELECT name, price_cents FROM `+pgTable+` WHERE id = $1`, id).Scan(&p.Name, &p.PriceCents)
	if errors.Is(err, pgx.ErrNoRows) {
		return Product{}, errNoProduct
	}
	return p, err
}

func (d *pgDB) queries() uint64 { return d.n.Load() }
func (d *pgDB) close()          { d.pool.Close() }
