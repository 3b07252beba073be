package redisguard

import (
	"bytes"
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// goroutineID returns the number runtime.Stack gives the calling goroutine.
func goroutineID() string {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	return string(b[:bytes.IndexByte(b, ' ')])
}

// TestWatchedCallsReuseGoroutines: consecutive watched calls (a client
// that ignores context deadlines) run on a goroutine that ran a call
// before, whose stack has grown already, not on a new goroutine each; Close
// ends the idle ones (goleak in TestMain).
func TestWatchedCallsReuseGoroutines(t *testing.T) {
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	g := New(Config{Client: rdb, Budget: 5 * time.Second, Limit: 5 * time.Second, MaxAbandoned: 8})
	defer g.Close()
	ctx := context.Background()
	seen := map[string]bool{}
	const calls = 20
	for range calls {
		var id string
		err := g.Do(ctx, "k", func(ctx context.Context) error {
			id = goroutineID()
			return rdb.Get(ctx, "k").Err()
		})
		if err != nil && err != redis.Nil {
			t.Fatalf("Do(GET k) = %v, want redis.Nil", err)
		}
		seen[id] = true
	}
	if len(seen) > 2 {
		t.Errorf("%d consecutive watched calls ran on %d goroutines, want at most 2", calls, len(seen))
	}
}
