// Command basic is the smallest complete use of cacheaside: products read
// from PostgreSQL through pgxpool, cached in Redis.
//
//	go run -C examples/basic . -redis 127.0.0.1:6379 \
//	    -database-url 'postgres://postgres@127.0.0.1:5432/test?sslmode=disable'
//
// It creates and seeds the table cacheaside_basic_products if it is missing,
// reads a product twice (a miss, then a hit), updates its price and
// invalidates it, reads it again, and reads a product that does not exist.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// Product is one row of the products table.
type Product struct {
	ID         int64  `json:"id"`
	Name       string `json:"name"`
	PriceCents int64  `json:"price_cents"`
}

func main() {
	redisAddr := flag.String("redis", "127.0.0.1:6379", "Redis address")
	dbURL := flag.String("database-url", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "PostgreSQL URL")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := run(ctx, os.Stdout, *redisAddr, *dbURL); err != nil {
		log.Fatal(err)
	}
}

// run is main without the flags, so that the test can call it; extra
// options go after the example's own.
func run(ctx context.Context, out io.Writer, redisAddr, dbURL string, extra ...cacheaside.Option) error {
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	defer pool.Close()
	if err := seed(ctx, pool); err != nil {
		return err
	}

	rdb := redis.NewClient(&redis.Options{Addr: redisAddr, ContextTimeoutEnabled: true})
	defer rdb.Close()

	// The loader is an ordinary query. A missing row becomes
	// cacheaside.ErrNotFound, which the cache remembers for a while.
	load := func(ctx context.Context, id int64) (Product, error) {
		var p Product
		err := pool.QueryRow(ctx,
			`SELECT id, name, price_cents FROM cacheaside_basic_products WHERE id = $1`, id,
		).Scan(&p.ID, &p.Name, &p.PriceCents)
		if errors.Is(err, pgx.ErrNoRows) {
			return p, fmt.Errorf("product %d: %w", id, cacheaside.ErrNotFound)
		}
		return p, err
	}
	opts := append([]cacheaside.Option{
		cacheaside.WithTTL(10 * time.Minute),
		cacheaside.WithPrefix("basic:"),
	}, extra...)
	cache, err := cacheaside.New(rdb, load, opts...)
	if err != nil {
		return err
	}
	defer cache.Close()

	for range 2 {
		p, err := cache.Get(ctx, 1)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "product 1: %s at %d cents\n", p.Name, p.PriceCents)
	}

	// Write to the database first, then invalidate: no Get that starts
	// after Invalidate returns sees the old price.
	if _, err := pool.Exec(ctx, `UPDATE cacheaside_basic_products SET price_cents = price_cents + 100 WHERE id = 1`); err != nil {
		return err
	}
	if err := cache.Invalidate(ctx, 1); err != nil {
		return err
	}
	p, err := cache.Get(ctx, 1)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "after the update: %s at %d cents\n", p.Name, p.PriceCents)

	if _, err := cache.Get(ctx, 999_999); errors.Is(err, cacheaside.ErrNotFound) {
		fmt.Fprintln(out, "product 999999: not found")
	} else {
		return fmt.Errorf("product 999999: got %v, want not found", err)
	}

	s := cache.Stats()
	fmt.Fprintf(out, "stats: %d hits, %d misses, %d loads\n", s.Hits, s.Misses, s.Loads)
	return nil
}

// seed creates the products table if it is missing. Two CREATE TABLE IF
// NOT EXISTS at once can both find the table missing, and the second then
// fails; an advisory lock held to the end of the transaction lets one
// run at a time create it.
func seed(ctx context.Context, pool *pgxpool.Pool) error {
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `
SELECT pg_advisory_xact_lock(hashtext('cacheaside_basic_products'));
CREATE TABLE IF NOT EXISTS cacheaside_basic_products (
	id bigint PRIMARY KEY,
	name text NOT NULL,
	price_cents bigint NOT NULL
);
INSERT INTO cacheaside_basic_products (id, name, price_cents) VALUES
	(1, 'teapot', 1999), (2, 'kettle', 3499), (3, 'mug', 899)
ON CONFLICT (id) DO NOTHING;`)
		return err
	})
	if err != nil {
		return fmt.Errorf("seeding cacheaside_basic_products: %w", err)
	}
	return nil
}
