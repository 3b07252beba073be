package protocol_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/protocol"
	"github.com/cacheaside/cacheaside/internal/redisguard"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/cacheaside/cacheaside/internal/testlog"
	"github.com/redis/go-redis/v9"
)

// The background releases (ReleaseAll) give back locks whose own Redis
// call failed: an acquire or a fill cut by the timeout clone's socket
// timeouts, after Redis ran it. A lock they miss stalls its key in every
// process for the whole lock TTL. The lock TTL here is long (a minute),
// so a lock found after the releases ended was not released.

// releaseLocker returns a Locker over rdb with a one-minute lock TTL whose
// cache closes with done (nil: never), and a function that waits for its
// background releases.
func releaseLocker(t *testing.T, rdb *redis.Client, done <-chan struct{}) (*protocol.Locker, func()) {
	t.Helper()
	testlog.Attach(t)
	g := redisguard.New(redisguard.Config{Client: rdb, Budget: time.Second, Limit: 2 * time.Second, MaxAbandoned: 4})
	var wg sync.WaitGroup
	t.Cleanup(func() { wg.Wait(); g.Close() })
	lk := protocol.NewLocker(protocol.LockerConfig{
		Client:      rdb,
		Guard:       g,
		Params:      protocol.Params{LockTTL: time.Minute, GenTTL: time.Hour},
		TokenPrefix: "t.",
		Go:          func(fn func()) { wg.Go(fn) },
		Done:        done,
	})
	return lk, wg.Wait
}

// takeLocks acquires the fill lock of n keys and returns them as held.
func takeLocks(t *testing.T, lk *protocol.Locker, n int) []protocol.Held {
	t.Helper()
	held := make([]protocol.Held, n)
	for i := range held {
		ks := protocol.KeysFor(protocol.ValueKey("r:", fmt.Sprint(i)))
		st, _, l, err := lk.Acquire(context.Background(), ks, protocol.ModeNormal, 0)
		if err != nil || st != protocol.StateAcquired {
			t.Fatalf("Acquire(%s) = %v, %v; want StateAcquired", ks[0], st, err)
		}
		held[i] = protocol.HeldBy(l, ks[0])[0]
	}
	return held
}

// locksLeft counts the lock keys of held that still exist.
func locksLeft(t *testing.T, rdb *redis.Client, held []protocol.Held) int {
	t.Helper()
	left := 0
	for _, h := range held {
		n, err := rdb.Exists(context.Background(), protocol.KeysFor(h.VKey)[1]).Result()
		if err != nil {
			t.Fatalf("EXISTS %s: %v", protocol.KeysFor(h.VKey)[1], err)
		}
		left += int(n)
	}
	return left
}

// TestReleaseAllKeepsEveryLock gives back 40 locks one ReleaseAll each
// while Redis is frozen, so that the first releases block: more than the
// 16 that run at once. Every lock must be released once Redis answers
// (before, the releases past the 16th were dropped and their locks left
// for the lock TTL).
func TestReleaseAllKeepsEveryLock(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	lk, wait := releaseLocker(t, rdb, nil)
	held := takeLocks(t, lk, 40)
	srv.Freeze()
	for _, h := range held {
		lk.ReleaseAll([]protocol.Held{h})
	}
	time.Sleep(100 * time.Millisecond) // the releases wait on the frozen server
	srv.Thaw()
	wait()
	if left := locksLeft(t, rdb, held); left != 0 {
		t.Errorf("after ReleaseAll of 40 locks, one call each, while Redis was frozen: %d locks left, want 0", left)
	}
}

// failPipelines fails the next n pipelines of the client it hooks with a
// read timeout, as the timeout clone's socket timeouts do, without sending
// them.
type failPipelines struct{ n atomic.Int64 }

func (h *failPipelines) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h *failPipelines) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h *failPipelines) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.n.Add(-1) >= 0 {
			err := &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}
			for _, c := range cmds {
				c.SetErr(err)
			}
			return err
		}
		return next(ctx, cmds)
	}
}

// TestReleaseAllRetries: a release pipeline that times out is sent again
// until it goes through (before, one failed pipeline left the locks for
// the lock TTL).
func TestReleaseAllRetries(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	lk, wait := releaseLocker(t, rdb, nil)
	held := takeLocks(t, lk, 3)
	h := &failPipelines{}
	h.n.Store(2)
	rdb.AddHook(h)
	lk.ReleaseAll(held)
	wait()
	if left := locksLeft(t, rdb, held); left != 0 {
		t.Errorf("after ReleaseAll whose first two pipelines timed out: %d of 3 locks left, want 0", left)
	}
	if n := h.n.Load(); n >= 0 {
		t.Errorf("pipelines failed: %d, want 2", 2-n)
	}
}

// TestReleaseAllStopsWhenClosed: with Redis down, a background release is
// sent again until the lock TTL (a minute here), unless the cache closes:
// then it stops, so that Close does not wait a lock TTL.
func TestReleaseAllStopsWhenClosed(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	done := make(chan struct{})
	lk, wait := releaseLocker(t, rdb, done)
	held := takeLocks(t, lk, 1)
	srv.Kill()
	lk.ReleaseAll(held)
	time.Sleep(50 * time.Millisecond) // its first pipeline fails
	close(done)
	start := time.Now()
	wait()
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("a release against a dead Redis ended %v after the cache closed, want within 10s (the lock TTL is a minute)", took)
	}
}
