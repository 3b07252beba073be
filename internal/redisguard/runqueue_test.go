package redisguard

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestRunQueueLagIsNotSilence: a reply that arrived but waits for its
// reader behind this process's other goroutines is not a silent node,
// even when the run queue is too short to count as busy (lag.go). With one
// P and fewer CPU-bound goroutines than busyQueue, a reader woken by the
// network waits a time slice per goroutine ahead of it, while a check
// woken by its timer runs at once: its own lateness says nothing about the
// readers'. Before lag.go, 11 to 14 of the 20 PINGs failed here on an idle
// machine ("exceeded the redis timeout (40ms)").
func TestRunQueueLagIsNotSilence(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	const budget = 40 * time.Millisecond
	g := New(Config{Client: rdb, Budget: budget, Limit: 5 * time.Second, MaxAbandoned: 8})
	t.Cleanup(g.Close)
	ping := func(ctx context.Context) error { return rdb.Ping(ctx).Err() }
	if err := g.Do(context.Background(), "k", ping); err != nil {
		t.Fatalf("first Do(PING) = %v", err)
	}

	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var stopped atomic.Bool
	done := make(chan struct{})
	const spinners = busyQueue - 2 // not busy by the run queue's length
	for range spinners {
		go func() {
			defer func() { done <- struct{}{} }()
			for n := 0; !stopped.Load(); n++ {
			}
		}()
	}
	var failed []error
	for range 20 {
		if err := g.Do(context.Background(), "k", ping); err != nil && !errors.Is(err, ErrSlow) {
			failed = append(failed, err)
		}
	}
	stopped.Store(true)
	for range spinners {
		<-done
	}
	if len(failed) > 0 {
		t.Errorf("%d of 20 PINGs to a Redis that answers failed while %d goroutines held this process's one P (first: %v), want none: the replies waited for their readers", len(failed), spinners, failed[0])
	}
}
