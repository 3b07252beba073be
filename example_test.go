package cacheaside_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/cacheaside/cacheaside"
	"github.com/redis/go-redis/v9"
)

type Product struct {
	ID    int64  `json:"id"`
	Name  string `json:"name"`
	Price int64  `json:"price_cents"`
}

// The examples run against an in-process fake Redis so that they need
// nothing to run; every behaviour they show is tested against a real
// redis-server in the other test files.
func exampleRedis() (*redis.Client, func()) {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	return rdb, func() { rdb.Close(); mr.Close() }
}

// loadProduct stands in for a database query such as
// SELECT id, name, price_cents FROM products WHERE id = $1.
func loadProduct(ctx context.Context, id int64) (Product, error) {
	if id != 42 {
		return Product{}, fmt.Errorf("product %d: %w", id, cacheaside.ErrNotFound)
	}
	return Product{ID: 42, Name: "teapot", Price: 1999}, nil
}

func Example() {
	rdb, stop := exampleRedis()
	defer stop()

	cache, err := cacheaside.New(rdb, loadProduct, cacheaside.WithTTL(10*time.Minute),
		// A Redis call slower than this fails open (a load, no error): the
		// default, 100ms, suits a Redis next door, not a test machine busy
		// enough to make the counts below vary.
		cacheaside.WithRedisTimeout(time.Second))
	if err != nil {
		panic(err)
	}
	defer cache.Close()

	ctx := context.Background()
	p, err := cache.Get(ctx, 42) // a miss: loads and stores
	fmt.Println(p.Name, err)
	p, err = cache.Get(ctx, 42) // a hit
	fmt.Println(p.Name, err)

	_, err = cache.Get(ctx, 7) // not found: cached for the negative TTL
	fmt.Println(errors.Is(err, cacheaside.ErrNotFound))

	s := cache.Stats()
	fmt.Println("hits:", s.Hits, "misses:", s.Misses, "loads:", s.Loads)
	// Output:
	// teapot <nil>
	// teapot <nil>
	// true
	// hits: 1 misses: 2 loads: 2
}

func ExampleCache_Invalidate() {
	rdb, stop := exampleRedis()
	defer stop()

	price := int64(1999)
	load := func(ctx context.Context, id int64) (Product, error) {
		return Product{ID: id, Name: "teapot", Price: price}, nil
	}
	cache, err := cacheaside.New(rdb, load, cacheaside.WithRedisTimeout(time.Second)) // see Example
	if err != nil {
		panic(err)
	}
	defer cache.Close()

	ctx := context.Background()
	p, _ := cache.Get(ctx, 42)
	fmt.Println(p.Price)

	price = 2499 // UPDATE products SET price_cents = 2499 WHERE id = 42
	if err := cache.Invalidate(ctx, 42); err != nil {
		panic(err)
	}
	p, _ = cache.Get(ctx, 42)
	fmt.Println(p.Price)
	// Output:
	// 1999
	// 2499
}

func ExampleNew_invalidOptions() {
	rdb, stop := exampleRedis()
	defer stop()

	_, err := cacheaside.New(rdb, loadProduct,
		cacheaside.WithTTL(0),
		cacheaside.WithJitter(1.5),
	)
	fmt.Println(err)
	// Output:
	// cacheaside: invalid configuration:
	// WithTTL: 0s is under the minimum of 1ms
	// WithJitter: 1.5 is outside [0, 1)
}

func ExampleWithKeyFunc() {
	rdb, stop := exampleRedis()
	defer stop()

	type SKU struct{ Vendor, Code string }
	load := func(ctx context.Context, k SKU) (string, error) { return k.Vendor + "/" + k.Code, nil }
	cache, err := cacheaside.New(rdb, load,
		cacheaside.WithKeyFunc(func(k SKU) string { return k.Vendor + ":" + k.Code }),
		cacheaside.WithRedisTimeout(time.Second), // see Example
	)
	if err != nil {
		panic(err)
	}
	defer cache.Close()

	v, err := cache.Get(context.Background(), SKU{"acme", "x1"})
	fmt.Println(v, err)
	// Output:
	// acme/x1 <nil>
}
