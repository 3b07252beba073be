package redisguard

import (
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func shareConfig(rdb redis.UniversalClient) Config {
	return Config{Client: rdb, Budget: 100 * time.Millisecond, Limit: time.Second,
		BreakerFailures: 5, BreakerCooldown: time.Second, MaxAbandoned: 8}
}

// TestShareAcquire: one client and the same settings give one Guard (so
// one dial hook, installed by its New); other settings or another client
// give another; the last release forgets the Guard.
func TestShareAcquire(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never dialled
	t.Cleanup(func() { _ = rdb.Close() })
	other := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = other.Close() })

	a, releaseA := Acquire(shareConfig(rdb))
	b, releaseB := Acquire(shareConfig(rdb))
	if a != b {
		t.Errorf("Acquire twice on one client with the same settings gave two guards")
	}
	slower := shareConfig(rdb)
	slower.Budget *= 2
	c, releaseC := Acquire(slower)
	d, releaseD := Acquire(shareConfig(other))
	if c == a || d == a || c == d {
		t.Errorf("Acquire with another budget or another client shared a guard")
	}
	releaseC()
	releaseD()
	releaseA()
	releaseA() // a second release of one acquisition does nothing
	if e, releaseE := Acquire(shareConfig(rdb)); e != a {
		t.Errorf("Acquire while one holder is left gave a new guard")
	} else {
		releaseE()
	}
	releaseB()
	if e, releaseE := Acquire(shareConfig(rdb)); e == a {
		t.Errorf("Acquire after the last release gave the closed guard")
	} else {
		releaseE()
	}
	registry.Lock()
	defer registry.Unlock()
	if n := len(registry.guards); n != 0 {
		t.Errorf("%d guards registered after every release, want 0", n)
	}
}

// TestShareSubscribers: every subscriber hears of a breaker change, a
// panic in one does not stop the others, and one that unsubscribed hears
// nothing more.
func TestShareSubscribers(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = rdb.Close() })
	g, release := Acquire(shareConfig(rdb))
	defer release()
	var heard [3]int
	g.Subscribe(func(string, State, State) { heard[0]++ })
	unsub := g.Subscribe(func(string, State, State) { heard[1]++; panic("subscriber panics") })
	g.Subscribe(func(string, State, State) { heard[2]++ })
	g.breakerChanged("", Closed, Open)
	if heard != [3]int{1, 1, 1} {
		t.Errorf("after one change, subscribers heard %v, want [1 1 1]", heard)
	}
	unsub()
	unsub()
	g.breakerChanged("", Open, HalfOpen)
	if heard != [3]int{2, 1, 2} {
		t.Errorf("after unsubscribing the second, subscribers heard %v, want [2 1 2]", heard)
	}
	if c := g.Counts(); c.Opens != 1 {
		t.Errorf("Counts().Opens = %d, want 1", c.Opens)
	}
}

// TestShareConcurrent acquires, subscribes and releases from many
// goroutines at once (run under -race).
func TestShareConcurrent(t *testing.T) {
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = rdb.Close() })
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := range 50 {
				cfg := shareConfig(rdb)
				cfg.Budget += time.Duration((w+i)%3) * time.Millisecond
				g, release := Acquire(cfg)
				unsub := g.Subscribe(func(string, State, State) {})
				g.breakerChanged("", Closed, Closed)
				unsub()
				release()
			}
		})
	}
	wg.Wait()
	registry.Lock()
	defer registry.Unlock()
	if n := len(registry.guards); n != 0 {
		t.Errorf("%d guards registered after every release, want 0", n)
	}
}
