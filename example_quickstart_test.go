package cacheaside_test

// This file is the README's quick start, verbatim but for the Redis address
// (an in-process miniredis here, so that the example runs without a
// server) and the loader's body (a map here, where the README
// queries PostgreSQL with pgx: a runnable example cannot count on a
// database table).

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/cacheaside/cacheaside"
	"github.com/redis/go-redis/v9"
)

type User struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
}

func Example_quickStart() {
	ctx := context.Background()
	mr := miniredis.NewMiniRedis() // README: none; Redis runs at localhost:6379
	if err := mr.Start(); err != nil {
		log.Fatal(err)
	}
	defer mr.Close()

	// One go-redis client per process. ContextTimeoutEnabled lets the
	// cache bound each Redis call on the caller's goroutine: the fast path.
	rdb := redis.NewClient(&redis.Options{
		Addr:                  mr.Addr(), // README: "localhost:6379"
		ContextTimeoutEnabled: true,
	})
	defer rdb.Close()

	// The loader runs on a miss, once per key across the fleet.
	loadUser := func(ctx context.Context, id int64) (User, error) {
		name, ok := map[int64]string{1: "Ada"}[id] // README: a pgx query
		if !ok {
			return User{}, cacheaside.ErrNotFound
		}
		return User{ID: id, Name: name}, nil
	}

	users, err := cacheaside.New(rdb, loadUser,
		cacheaside.WithPrefix("user:"),
		cacheaside.WithTTL(10*time.Minute),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer users.Close()

	u, err := users.Get(ctx, 1)
	fmt.Println(u.Name, err)
	// Output:
	// Ada <nil>
}
