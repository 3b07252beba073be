package redisguard

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

type ctxKey struct{}

// TestBudgetCtx: the context of an inline call reports its deadline
// exactly, keeps its parent's values, is not done before the deadline,
// is done within a few ticks after it (a loaded machine may run the
// tick's timer late, but never seconds late), and then reports
// DeadlineExceeded, or its parent's error when the parent ended.
func TestBudgetCtx(t *testing.T) {
	const budget = 80 * time.Millisecond
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	defer rdb.Close()
	g := New(Config{Client: rdb, Budget: budget, Limit: time.Second, MaxAbandoned: 1})
	defer g.Close()
	for _, cancelParent := range []bool{false, true} {
		parent, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
		start := time.Now()
		ctx, done := g.withDeadline(parent, clock(), budget)
		if _, ok := ctx.(*budgetCtx); !ok {
			t.Fatalf("withDeadline(ctx, budget) = %T, want *budgetCtx", ctx)
		}
		if d, ok := ctx.Deadline(); !ok || d.Before(start.Add(budget)) || d.After(time.Now().Add(budget)) {
			t.Errorf("Deadline() = %v, %v; want %v after the call", d, ok, budget)
		}
		if v := ctx.Value(ctxKey{}); v != "v" {
			t.Errorf("Value() = %v, want the parent's value", v)
		}
		if cancelParent {
			cancel()
		}
		if err := ctx.Err(); err != nil {
			t.Errorf("Err() before the deadline = %v, want nil (the parent is seen at the deadline)", err)
		}
		select {
		case <-ctx.Done():
			t.Errorf("Done() closed %v after the start, want not before the deadline %v", time.Since(start), budget)
		default:
		}
		<-ctx.Done()
		took := time.Since(start)
		if took < budget || took > budget+time.Second {
			t.Errorf("Done() closed after %v, want within a tick (%v) of the deadline %v", took, budget/ticksPerBudget, budget)
		}
		want := context.DeadlineExceeded
		if cancelParent {
			want = context.Canceled
		}
		if err := ctx.Err(); !errors.Is(err, want) {
			t.Errorf("Err() after Done (parent cancelled: %v) = %v, want %v", cancelParent, err, want)
		}
		done()
		cancel()
	}
	// A parent with an earlier deadline keeps it: a context of its own.
	parent, cancel := context.WithTimeout(context.Background(), budget/2)
	defer cancel()
	ctx, done := g.withDeadline(parent, clock(), budget)
	defer done()
	if _, ok := ctx.(*budgetCtx); ok {
		t.Errorf("withDeadline under a parent with an earlier deadline = *budgetCtx, want context.WithDeadline's")
	}
}

// TestDoInlineAllocatesOne: an inline call makes one allocation of its
// own (its context), not context.WithTimeout's five; the hit path counts
// on it.
func TestDoInlineAllocatesOne(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", ContextTimeoutEnabled: true})
	defer rdb.Close()
	g := New(Config{Client: rdb, Budget: 100 * time.Millisecond, Limit: time.Second, MaxAbandoned: 1, Inline: true, PoolSize: 10})
	defer g.Close()
	ctx := context.Background()
	fn := func(ctx context.Context) error { return nil }
	if err := g.Do(ctx, "k", fn); err != nil { // the first reply ends the cold state
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		n, d := g.Inline("k")
		if n == nil {
			t.Fatal("Inline(k) = nil on a calm node")
		}
		if err := g.DoInline(ctx, n, d, fn); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Errorf("DoInline allocates %v objects per call, want at most 1", allocs)
	}
}

// TestInlinePoolWaitEndsAtBudget: an inline call that waits for a pooled
// connection (the application holds the only one) ends about the budget
// after it began, as a socket read does, not at the pool's timeout: the
// budget holds where go-redis waits on ctx.Done() rather than on
// ctx.Deadline(). Its error is a timeout, which the guard judges.
func TestInlinePoolWaitEndsAtBudget(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: true, PoolSize: 1,
		PoolTimeout: 10 * time.Second, MaxRetries: -1})
	defer rdb.Close()
	const budget = 100 * time.Millisecond
	g := New(Config{Client: rdb, Budget: budget, Limit: 5 * time.Second, MaxAbandoned: 1, Inline: true, PoolSize: 1})
	defer g.Close()
	get := func(ctx context.Context) error { return rdb.Get(ctx, "k").Err() }
	if err := g.Do(ctx, "k", get); !errors.Is(err, redis.Nil) {
		t.Fatalf("Do(GET k) = %v, want redis.Nil", err)
	}
	held := rdb.Conn() // takes the pool's only connection on first use
	if err := held.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	n, d := g.Inline("k")
	if n == nil || d != budget {
		t.Fatalf("Inline(k) = %v, %v; want the node and the budget %v", n, d, budget)
	}
	start := time.Now()
	err := g.DoInline(ctx, n, d, get)
	took := time.Since(start)
	if !IsTimeout(err) || took > 3*time.Second {
		t.Errorf("DoInline(GET k) waiting for the pool = %v after %v, want a timeout at about %v, far from the pool's 10s", err, took, budget)
	}
	_ = held.Close()
	if err := g.Do(ctx, "k", get); !errors.Is(err, redis.Nil) {
		t.Errorf("Do(GET k) once the connection is back = %v, want redis.Nil", err)
	}
}

// TestPoolWaitIsNotAFailure: calls that give up waiting for a pooled
// connection (the application holds the only one) while the node answers
// other calls are slow, not failed: the breaker stays closed however many
// there are, on the inline path (cut at the budget, go-redis returns the
// context's error) and on the watched path (go-redis's own PoolTimeout).
// (Without a reply meanwhile the wait may have been for a dial a black
// hole never answers: integration's TestGetSurvivesBlackhole.)
func TestPoolWaitIsNotAFailure(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	for _, tc := range []struct {
		name                string
		inline              bool
		budget, poolTimeout time.Duration
	}{
		// Cut by the context at the budget while in the pool.
		{"inline", true, 50 * time.Millisecond, 10 * time.Second},
		// go-redis's own PoolTimeout, well within the budget: a
		// check at the budget would judge the node's silence. Long
		// enough that the node answers the other client's pings within
		// it on a loaded machine (10ms, with the other client's first
		// ping still dialing, failed once in CI: "call #0 waiting for
		// the pool = redis: connection pool timeout").
		{"watched", false, 2 * time.Second, 200 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: tc.inline, PoolSize: 1,
				PoolTimeout: tc.poolTimeout, MaxRetries: -1})
			defer rdb.Close()
			g := New(Config{Client: rdb, Budget: tc.budget, Limit: 5 * time.Second, MaxAbandoned: 4, Inline: tc.inline, PoolSize: 1,
				BreakerFailures: 3, BreakerCooldown: time.Minute})
			defer g.Close()
			get := func(ctx context.Context) error { return rdb.Get(ctx, "k").Err() }
			if err := g.Do(ctx, "k", get); !errors.Is(err, redis.Nil) {
				t.Fatalf("Do(GET k) = %v, want redis.Nil", err)
			}
			n, d := g.Inline("k")
			held := rdb.Conn() // takes the pool's only connection on first use
			if err := held.Ping(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			// The node answers other calls meanwhile (through another
			// client: the guard judges the node, not the pool).
			other := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
			defer other.Close()
			stop := make(chan struct{})
			answering := make(chan struct{})
			first := make(chan struct{}) // closed at the first reply: other has dialed
			go func() {
				defer close(answering)
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					_ = g.Do(ctx, "k", func(ctx context.Context) error { return other.Ping(ctx).Err() })
					if i == 0 {
						close(first)
					}
					time.Sleep(time.Millisecond)
				}
			}()
			defer func() { close(stop); <-answering }()
			<-first
			for i := range 6 {
				var err error
				if tc.inline {
					err = g.DoInline(ctx, n, d, get) // as calls that all found the node calm
				} else {
					err = g.Do(ctx, "k", get)
				}
				if !errors.Is(err, ErrSlow) {
					t.Errorf("call #%d waiting for the pool = %v, want ErrSlow: a pool wait is not a Redis failure", i, err)
				}
			}
			if st, c := g.State(), g.Counts(); st != Closed || c.Opens != 0 {
				t.Errorf("after 6 pool waits: State() = %v, %d opens; want Closed, 0", st, c.Opens)
			}
			_ = held.Close()
			if err := g.Do(ctx, "k", get); !errors.Is(err, redis.Nil) {
				t.Errorf("Do(GET k) once the connection is back = %v, want redis.Nil", err)
			}
		})
	}
}
