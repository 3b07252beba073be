package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/cacheaside/cacheaside"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// defaultTable is the products table the service creates and seeds.
const defaultTable = "cacheaside_http_products"

// seedProducts is how many products a new table gets.
const seedProducts = 200

// Product is one row of the products table, and the JSON the service
// serves.
type Product struct {
	ID         int64  `json:"id"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
}

// store is the SQL side of the service: the source of truth the cache
// loads from.
type store struct {
	pool  *pgxpool.Pool
	table string // quoted identifier
}

func newStore(pool *pgxpool.Pool, table string) *store {
	return &store{pool: pool, table: pgx.Identifier{table}.Sanitize()}
}

// migrate creates the products table if it is missing and seeds it with
// products 1 to seedProducts, leaving rows that exist as they are.
func (s *store) migrate(ctx context.Context) error {
	_, err := s.pool.Exec(ctx, fmt.Sprintf(`
CREATE TABLE IF NOT EXISTS %[1]s (
	id bigint PRIMARY KEY,
	name text NOT NULL,
	price_cents bigint NOT NULL CHECK (price_cents >= 0)
);
INSERT INTO %[1]s (id, name, price_cents)
SELECT i, 'product ' || i, 100 + (i * 7919) %% 9900 FROM generate_series(1, %[2]d) AS i
ON CONFLICT (id) DO NOTHING;`, s.table, seedProducts))
	if err != nil {
		return fmt.Errorf("creating and seeding %s: %w", s.table, err)
	}
	return nil
}

// product is the cache's loader: it reads one product, and says
// cacheaside.ErrNotFound when there is no such row.
func (s *store) product(ctx context.Context, id int64) (Product, error) {
	return scanProduct(id, "reading", s.pool.QueryRow(ctx,
		`SELECT id, name, price_cents FROM `+s.table+` WHERE id = $1`, id))
}

// setPrice updates the price of product id and returns the updated row,
// or an error wrapping cacheaside.ErrNotFound when there is no such row.
func (s *store) setPrice(ctx context.Context, id, cents int64) (Product, error) {
	return scanProduct(id, "updating", s.pool.QueryRow(ctx,
		`UPDATE `+s.table+` SET price_cents = $2 WHERE id = $1 RETURNING id, name, price_cents`, id, cents))
}

// scanProduct reads the one product row of a query about product id.
func scanProduct(id int64, doing string, row pgx.Row) (Product, error) {
	var p Product
	err := row.Scan(&p.ID, &p.Name, &p.PriceCents)
	if errors.Is(err, pgx.ErrNoRows) {
		return p, fmt.Errorf("product %d: %w", id, cacheaside.ErrNotFound)
	}
	if err != nil {
		return p, fmt.Errorf("%s product %d: %w", doing, id, err)
	}
	return p, nil
}

// lowestIDs returns a function that lists the n lowest product ids, the
// products warmed at start and after Redis comes back empty. A real shop
// would list its best sellers here.
func (s *store) lowestIDs(n int) func(context.Context) ([]int64, error) {
	return func(ctx context.Context) ([]int64, error) {
		rows, err := s.pool.Query(ctx, `SELECT id FROM `+s.table+` ORDER BY id LIMIT $1`, n)
		if err != nil {
			return nil, fmt.Errorf("listing products to warm: %w", err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return nil, fmt.Errorf("listing products to warm: %w", err)
		}
		return ids, nil
	}
}
