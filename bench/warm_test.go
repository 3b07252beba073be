package main

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// failsOpenFor is a strategy whose Gets answer without storing the value
// until a moment has passed, as cacheaside's do while its breaker is open
// on a busy machine (Redis calls past the 100ms budget), then store it.
type failsOpenFor struct {
	rdb   *redis.Client
	until time.Time
}

func (f *failsOpenFor) get(ctx context.Context, id int64) (Product, error) {
	if time.Now().After(f.until) {
		if err := f.rdb.Set(ctx, strconv.FormatInt(id, 10), "v", 0).Err(); err != nil {
			return Product{}, err
		}
	}
	return newProduct(id), nil
}

func (f *failsOpenFor) warm(ctx context.Context, ids []int64) error { return warmByGet(ctx, f, ids) }
func (f *failsOpenFor) notes() string                               { return "" }
func (f *failsOpenFor) close() error                                { return nil }

// TestWarmUntilStoredOutlastsAnOpenBreaker: the avalanche's warm-up goes
// on past an open breaker's cooldown (CircuitBreaker's default 500ms).
// Five tries at once ended within it on a machine running two test suites
// at once ("68 warm keys not in Redis after 5 warm-ups").
func TestWarmUntilStoredOutlastsAnOpenBreaker(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	srv, err := startServer(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = srv.close() }()
	rdb := redis.NewClient(&redis.Options{Addr: srv.addr()})
	defer rdb.Close()
	s := &failsOpenFor{rdb: rdb, until: time.Now().Add(700 * time.Millisecond)}
	ids := []int64{1, 2, 3, 4, 5, 6, 7, 8}
	key := func(id int64) string { return strconv.FormatInt(id, 10) }
	if err := warmUntilStored(ctx, s, rdb, key, ids); err != nil {
		t.Fatalf("warmUntilStored = %v, want nil", err)
	}
	if n := rdb.Exists(ctx, "1", "2", "3", "4", "5", "6", "7", "8").Val(); n != 8 {
		t.Errorf("EXISTS of the 8 keys = %d, want 8", n)
	}
}
