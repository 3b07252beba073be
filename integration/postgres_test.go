package cacheaside_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/integration/pgtest"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The tests below run the cache in front of a real PostgreSQL table, with
// the loader an application would write: one SELECT by primary key, no
// rows meaning ErrNotFound.

type product struct {
	ID         int64  `json:"id"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
}

// catalog is a products table and a loader over it that counts queries per
// id.
type catalog struct {
	pool    *pgxpool.Pool
	table   string
	mu      sync.Mutex
	queries map[int64]int
}

func newCatalog(t *testing.T, rows ...product) *catalog {
	t.Helper()
	pool := pgtest.Pool(t)
	table := pgtest.Table(t, pool, "id bigint primary key, name text not null, price_cents bigint not null")
	ctx := testContext(t)
	for _, p := range rows {
		if _, err := pool.Exec(ctx, fmt.Sprintf("INSERT INTO %s (id, name, price_cents) VALUES ($1, $2, $3)", table), p.ID, p.Name, p.PriceCents); err != nil {
			t.Fatalf("INSERT %+v: %v", p, err)
		}
	}
	return &catalog{pool: pool, table: table, queries: make(map[int64]int)}
}

func (c *catalog) load(ctx context.Context, id int64) (product, error) {
	c.mu.Lock()
	c.queries[id]++
	c.mu.Unlock()
	var p product
	err := c.pool.QueryRow(ctx, fmt.Sprintf("SELECT id, name, price_cents FROM %s WHERE id = $1", c.table), id).
		Scan(&p.ID, &p.Name, &p.PriceCents)
	if errors.Is(err, pgx.ErrNoRows) {
		return product{}, fmt.Errorf("product %d: %w", id, cacheaside.ErrNotFound)
	}
	if err != nil {
		return product{}, fmt.Errorf("product %d: %w", id, err)
	}
	return p, nil
}

func (c *catalog) queried(id int64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queries[id]
}

var teapot = product{ID: 1, Name: "teapot", PriceCents: 1999}

// TestPostgresHitAfterFirstLoad proves that the first Get queries the
// table and later Gets, on this Cache or another, are served from Redis.
func TestPostgresHitAfterFirstLoad(t *testing.T) {
	db := newCatalog(t, teapot)
	srv := redistest.Start(t)
	c := newCache(t, srv, db.load)
	ctx := testContext(t)
	for i := range 3 {
		if got, err := c.Get(ctx, 1); err != nil || got != teapot {
			t.Fatalf("Get(%v) #%d = %+v, %v; want %+v, nil", 1, i+1, got, err, teapot)
		}
	}
	if got, err := newCache(t, srv, db.load).Get(ctx, 1); err != nil || got != teapot {
		t.Errorf("Get(%v) on another Cache = %+v, %v; want %+v, nil", 1, got, err, teapot)
	}
	if n := db.queried(1); n != 1 {
		t.Errorf("4 Gets of product 1 ran %d queries, want 1", n)
	}
}

// TestPostgresMissingRowIsNegativeCached proves that a missing row maps to
// ErrNotFound and is not queried again within the negative TTL.
func TestPostgresMissingRowIsNegativeCached(t *testing.T) {
	db := newCatalog(t, teapot)
	srv := redistest.Start(t)
	c := newCache(t, srv, db.load, cacheaside.WithNegativeTTL(time.Minute))
	ctx := testContext(t)
	for i := range 3 {
		if got, err := c.Get(ctx, 404); !errors.Is(err, cacheaside.ErrNotFound) {
			t.Fatalf("Get(%v) #%d = %+v, %v; want ErrNotFound", 404, i+1, got, err)
		}
	}
	if n := db.queried(404); n != 1 {
		t.Errorf("3 Gets of a missing product ran %d queries, want 1", n)
	}
	if !isNotFoundMarker(t, srv, "ca:{404}") {
		t.Errorf("Redis ca:{404} holds no not-found marker")
	}
}

// TestPostgresUpdateThenInvalidate proves the write path of cache-aside:
// UPDATE the row, Invalidate the key, and the next Get, on any Cache,
// returns the new price.
func TestPostgresUpdateThenInvalidate(t *testing.T) {
	db := newCatalog(t, teapot)
	srv := redistest.Start(t)
	reader, writer := newCache(t, srv, db.load), newCache(t, srv, db.load)
	ctx := testContext(t)
	if got, err := reader.Get(ctx, 1); err != nil || got != teapot {
		t.Fatalf("Get(%v) = %+v, %v; want %+v, nil", 1, got, err, teapot)
	}
	if _, err := db.pool.Exec(ctx, fmt.Sprintf("UPDATE %s SET price_cents = 2499 WHERE id = 1", db.table)); err != nil {
		t.Fatalf("UPDATE: %v", err)
	}
	if err := writer.Invalidate(ctx, 1); err != nil {
		t.Fatalf("Invalidate(1) = %v, want nil", err)
	}
	want := product{ID: 1, Name: "teapot", PriceCents: 2499}
	for _, c := range []*cacheaside.Cache[int64, product]{reader, writer} {
		if got, err := c.Get(ctx, 1); err != nil || got != want {
			t.Errorf("Get(%v) after UPDATE and Invalidate = %+v, %v; want %+v, nil", 1, got, err, want)
		}
	}
	if n := db.queried(1); n != 2 {
		t.Errorf("product 1 was queried %d times, want 2 (before and after the Invalidate)", n)
	}
}

// TestPostgresConcurrentCachesQueryOnce proves the stampede bound against
// the real database: four Caches with 50 goroutines each on five cold
// keys (one of them missing) run one query per key.
func TestPostgresConcurrentCachesQueryOnce(t *testing.T) {
	rows := []product{teapot, {2, "kettle", 3499}, {3, "mug", 899}, {4, "spoon", 199}}
	db := newCatalog(t, rows...)
	srv := redistest.Start(t)
	caches := make([]*cacheaside.Cache[int64, product], 4)
	for i := range caches {
		caches[i] = newCache(t, srv, db.load)
	}
	want := map[int64]product{}
	for _, p := range rows {
		want[p.ID] = p
	}
	ctx := testContext(t)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for id := int64(1); id <= 5; id++ {
		for _, c := range caches {
			for range 50 {
				wg.Go(func() {
					<-start
					got, err := c.Get(ctx, id)
					p, exists := want[id]
					switch {
					case exists && (err != nil || got != p):
						t.Errorf("Get(%v) = %+v, %v; want %+v, nil", id, got, err, p)
					case !exists && !errors.Is(err, cacheaside.ErrNotFound):
						t.Errorf("Get(%v) = %+v, %v; want ErrNotFound", id, got, err)
					}
				})
			}
		}
	}
	close(start)
	wg.Wait()
	for id := int64(1); id <= 5; id++ {
		if n := db.queried(id); n != 1 {
			t.Errorf("200 Gets of product %d on 4 Caches ran %d queries, want 1", id, n)
		}
	}
	if t.Failed() {
		for i, c := range caches {
			t.Logf("Cache %d Stats() = %+v", i, c.Stats())
		}
	}
}
