package redisguard

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

func TestIsRefusal(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"dial refused", refusedDial(t), true},
		{"wrapped refused", fmt.Errorf("dial: %w", syscall.ECONNREFUSED), true},
		{"dial error", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("no route to host")}, true},
		{"dial timeout", &net.OpError{Op: "dial", Net: "tcp", Err: context.DeadlineExceeded}, false},
		{"dial cancelled", &net.OpError{Op: "dial", Net: "tcp", Err: context.Canceled}, false},
		{"read error", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, false},
		{"deadline", context.DeadlineExceeded, false},
	}
	for _, tt := range tests {
		if got := isRefusal(tt.err); got != tt.want {
			t.Errorf("isRefusal(%s: %v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

// TestRefusingNodeFailsFast kills a server a default client has reached:
// a call fails without waiting for the budget, once its dial is refused;
// the next calls are not sent (errRefused, an outage) until the refusal
// is a budget old, when one call is sent again; a reply ends it.
func TestRefusingNodeFailsFast(t *testing.T) {
	const budget = 200 * time.Millisecond
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	g := New(Config{Client: rdb, Budget: budget, Limit: time.Second, MaxAbandoned: 8})
	t.Cleanup(g.Close)
	ctx := context.Background()
	get := func() (time.Duration, error) {
		start := time.Now()
		err := g.Do(ctx, "k", func(ctx context.Context) error { return rdb.Get(ctx, "k").Err() })
		return time.Since(start), err
	}
	if _, err := get(); !errors.Is(err, redis.Nil) {
		t.Fatalf("Do(GET) = %v, want redis.Nil", err)
	}
	srv.Kill()
	took, err := get()
	if !IsOutage(err) || !errors.Is(err, ErrIncomplete) || took >= budget/2 {
		t.Errorf("first Do(GET) on a killed server = %v after %v, want an incomplete outage within %v", err, took, budget/2)
	}
	took, err = get()
	if !errors.Is(err, errRefused) || !errors.Is(err, syscall.ECONNREFUSED) || took >= budget/2 {
		t.Errorf("second Do(GET) on a killed server = %v after %v, want errRefused (ECONNREFUSED) within %v", err, took, budget/2)
	}
	srv.Start()
	time.Sleep(budget)
	// The refusal is a budget old: one call is sent (its dial may still
	// find the pool's dial errors), then calls reach the server again.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := get()
		if errors.Is(err, redis.Nil) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Do(GET) after the server restarted = %v, want redis.Nil within 5s", err)
		}
		time.Sleep(budget / 4)
	}
}

// TestDialHookDoesNotKeepGuard: go-redis has no RemoveHook, so the hook
// holds its guard weakly: a dropped guard is collected while its client
// lives on.
func TestDialHookDoesNotKeepGuard(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = rdb.Close() })
	collected := make(chan struct{})
	func() {
		g := New(Config{Client: rdb, Budget: time.Second, Limit: time.Second, MaxAbandoned: 1})
		runtime.AddCleanup(g, func(ch chan struct{}) { close(ch) }, collected)
	}()
	for range 20 {
		runtime.GC()
		select {
		case <-collected:
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Errorf("a Guard whose hook its client keeps was not collected")
}
