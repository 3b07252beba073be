package redisguard

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestDoFrozenNode: a call to a node that answered once and then froze
// returns ErrIncomplete after about the budget, on a client that ignores
// context deadlines (the watched path); the call is counted abandoned,
// Close waits for it once the node thaws, and consecutive failures open
// the breaker, after which calls are skipped without being sent.
func TestDoFrozenNode(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1, ReadTimeout: 2 * time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	const budget = 100 * time.Millisecond
	var opened []string
	g := New(Config{Client: rdb, Budget: budget, Limit: time.Second, MaxAbandoned: 8,
		BreakerFailures: 2, BreakerCooldown: time.Minute,
		OnChange: func(node string, from, to State) {
			if to == Open {
				opened = append(opened, node)
			}
		}})
	get := func() error {
		return g.Do(ctx, "k", func(ctx context.Context) error { return rdb.Get(ctx, "k").Err() })
	}
	if err := get(); !errors.Is(err, redis.Nil) {
		t.Fatalf("Do(GET k) on a live server = %v, want redis.Nil", err)
	}
	srv.Freeze()
	for i := range 2 {
		start := time.Now()
		err := get()
		if took := time.Since(start); !errors.Is(err, ErrIncomplete) || took > 10*budget {
			t.Errorf("Do #%d on a frozen node = %v after %v, want ErrIncomplete within about %v", i, err, took, budget)
		}
	}
	if err := get(); !errors.Is(err, ErrSkipped) {
		t.Errorf("Do with the breaker open = %v, want ErrSkipped", err)
	}
	if g.State() != Open || len(opened) != 1 {
		t.Errorf("State() = %v, OnChange opens %v; want Open, one open", g.State(), opened)
	}
	c := g.Counts()
	if c.Abandoned != 2 || c.Skipped != 1 || c.Opens != 1 {
		t.Errorf("Counts() = %+v, want 2 abandoned, 1 skipped, 1 open", c)
	}
	srv.Thaw()
	g.Close() // the abandoned calls end once the node answers
}

// TestPerNodeSingleServer: on anything but a Cluster, PerNode makes one
// call for all the keys, and MGet reads them in one MGET.
func TestPerNodeSingleServer(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	g := New(Config{Client: rdb, Budget: time.Second, Limit: 2 * time.Second, MaxAbandoned: 4})
	t.Cleanup(g.Close)
	if err := rdb.Set(ctx, "b", "2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	keys := []string{"a", "b", "c"}
	calls := 0
	errOf, err := g.PerNode(ctx, keys, nil, func(ctx context.Context, idx []int) error {
		calls++
		if len(idx) != 3 {
			t.Errorf("PerNode call with indexes %v, want all three", idx)
		}
		return nil
	}, nil)
	if err != nil || calls != 1 || len(errOf) != 3 {
		t.Errorf("PerNode = %v, %v after %d calls; want no error, one call", errOf, err, calls)
	}
	raws, failed, err := g.MGet(ctx, keys)
	if err != nil {
		t.Fatalf("MGet: %v", err)
	}
	for i, want := range []string{"", "2", ""} {
		if got, err := Reply(raws, failed, i); err != nil || string(got) != want {
			t.Errorf("Reply(%q) = %q, %v, want %q", keys[i], got, err, want)
		}
	}
}
