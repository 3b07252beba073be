package protocol_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/protocol"
	"github.com/cacheaside/cacheaside/internal/redisguard"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/cacheaside/cacheaside/internal/testlog"
	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(testlog.M(m)) }

// newLocker returns a Locker over a fresh redis-server, through a real
// guard, and the client to inspect the server with. Its background
// releases run on goroutines the test waits for.
func newLocker(t *testing.T) (*protocol.Locker, *redis.Client) {
	t.Helper()
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	g := redisguard.New(redisguard.Config{Client: rdb, Budget: time.Second, Limit: 2 * time.Second, MaxAbandoned: 4})
	var wg sync.WaitGroup
	t.Cleanup(func() { wg.Wait(); g.Close() })
	lk := protocol.NewLocker(protocol.LockerConfig{
		Client:      rdb,
		Guard:       g,
		Params:      protocol.Params{LockTTL: 3 * time.Second, GenTTL: time.Minute},
		TokenPrefix: "t.",
		Go:          func(fn func()) { wg.Go(fn) },
		Fault:       func(err error) { t.Errorf("unexpected Redis fault: %v", err) },
	})
	return lk, rdb
}

// TestLockerSingleKey walks one key through the protocol: acquire on a
// miss, a second acquire finds the lock, the fill writes and releases, an
// acquire then finds the value; an Invalidate during a load refuses its
// fill.
func TestLockerSingleKey(t *testing.T) {
	ctx := context.Background()
	lk, rdb := newLocker(t)
	ks := protocol.KeysFor(protocol.ValueKey("p:", "k"))

	st, _, l, err := lk.Acquire(ctx, ks, protocol.ModeNormal, 0)
	if err != nil || st != protocol.StateAcquired || l.Token == "" || !l.Known() {
		t.Fatalf("Acquire on a miss = %v, %+v, %v; want StateAcquired with a token and a generation", st, l, err)
	}
	if st, _, l2, err := lk.Acquire(ctx, ks, protocol.ModeNormal, 0); err != nil || st != protocol.StateLocked || l2.Token != "" {
		t.Fatalf("second Acquire = %v, %+v, %v; want StateLocked without a token", st, l2, err)
	}
	res, err := lk.Fill(ctx, ks, l, []byte("v1"), time.Minute, false)
	if err != nil || res != protocol.FillLocked {
		t.Fatalf("Fill under the lock = %v, %v; want FillLocked", res, err)
	}
	if n := rdb.Exists(ctx, ks[1]).Val(); n != 0 {
		t.Errorf("lock key after the fill: EXISTS = %d, want 0", n)
	}
	if st, raw, _, err := lk.Acquire(ctx, ks, protocol.ModeNormal, 0); err != nil || st != protocol.StateValue || raw != "v1" {
		t.Fatalf("Acquire after the fill = %v, %q, %v; want StateValue \"v1\"", st, raw, err)
	}

	// A load that an Invalidate overtakes writes nothing.
	if _, err := lk.Invalidate(ctx, []string{ks[0]}); err != nil {
		t.Fatalf("Invalidate: %v", err)
	}
	_, _, l, err = lk.Acquire(ctx, ks, protocol.ModeNormal, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := lk.Overwrite(ctx, ks[0], []byte("set"), time.Minute); err != nil {
		t.Fatalf("Overwrite: %v", err)
	}
	if res, err := lk.Fill(ctx, ks, l, []byte("old"), time.Minute, false); err != nil || res != protocol.FillConflict {
		t.Errorf("Fill after a Set = %v, %v; want FillConflict", res, err)
	}
	if v := rdb.Get(ctx, ks[0]).Val(); v != "set" {
		t.Errorf("value after the refused fill = %q, want the Set's \"set\"", v)
	}
}

// TestLockerGiveBack: a load that wrote nothing releases its lock, or
// holds it for HoldOnError after a failure; Extend reports a lock no
// longer held.
func TestLockerGiveBack(t *testing.T) {
	ctx := context.Background()
	lk, rdb := newLocker(t)
	ks := protocol.KeysFor(protocol.ValueKey("p:", "g"))

	_, _, l, err := lk.Acquire(ctx, ks, protocol.ModeNormal, 0)
	if err != nil || l.Token == "" {
		t.Fatalf("Acquire = %+v, %v", l, err)
	}
	if lost := lk.Extend(ctx, protocol.HeldBy(l, ks[0])); len(lost) != 0 {
		t.Errorf("Extend of a held lock lost %v, want none", lost)
	}
	lk.GiveBack(ctx, ks, l, false)
	if n := rdb.Exists(ctx, ks[1]).Val(); n != 0 {
		t.Errorf("lock after GiveBack of a load that did not fail: EXISTS = %d, want 0", n)
	}
	if lost := lk.Extend(ctx, protocol.HeldBy(l, ks[0])); len(lost) != 1 {
		t.Errorf("Extend of a released lock lost %v, want it", lost)
	}

	_, _, l, err = lk.Acquire(ctx, ks, protocol.ModeNormal, 0)
	if err != nil || l.Token == "" {
		t.Fatalf("Acquire = %+v, %v", l, err)
	}
	l.HoldOnError = 30 * time.Second
	lk.GiveBack(ctx, ks, l, true)
	if ttl := rdb.PTTL(ctx, ks[1]).Val(); ttl < 20*time.Second {
		t.Errorf("lock PTTL after GiveBack of a failed load with HoldOnError 30s = %v, want about 30s", ttl)
	}
}

// TestLockerBatch: a batch acquire takes the locks of missing keys and
// returns present values; a batch fill writes under them.
func TestLockerBatch(t *testing.T) {
	ctx := context.Background()
	lk, rdb := newLocker(t)
	vkeys := []string{protocol.ValueKey("p:", "a"), protocol.ValueKey("p:", "b"), protocol.ValueKey("p:", "c")}
	if err := rdb.Set(ctx, vkeys[1], "there", time.Minute).Err(); err != nil {
		t.Fatal(err)
	}
	out := lk.AcquireBatch(ctx, vkeys, nil, []int{0, 1, 2})
	if a := out[1]; a.Down || a.Err != nil || a.State != protocol.StateValue || a.Raw != "there" {
		t.Errorf("AcquireBatch of a present key = %+v, want StateValue \"there\"", a)
	}
	var fills []protocol.BatchFill
	for _, i := range []int{0, 2} {
		if a := out[i]; a.Down || a.Err != nil || a.State != protocol.StateAcquired {
			t.Fatalf("AcquireBatch of a missing key = %+v, want StateAcquired", a)
		}
		fills = append(fills, protocol.BatchFill{VKey: vkeys[i], Lease: out[i].Lease, Env: []byte("new"), PX: time.Minute})
	}
	for j, f := range lk.FillBatch(ctx, fills) {
		if f.Err != nil || f.Res != protocol.FillLocked {
			t.Errorf("FillBatch of %s = %+v, want FillLocked", fills[j].VKey, f)
		}
	}
	if v := rdb.MGet(ctx, vkeys...).Val(); v[0] != "new" || v[1] != "there" || v[2] != "new" {
		t.Errorf("values after the batch = %v, want [new there new]", v)
	}
}

// TestLockerSkippedCallTakesNothing: with the breaker open, acquires are
// not sent: the batch marks every key down, the single key returns
// ErrSkipped.
func TestLockerSkippedCallTakesNothing(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	g := redisguard.New(redisguard.Config{Client: rdb, Budget: 200 * time.Millisecond, Limit: time.Second,
		MaxAbandoned: 4, BreakerFailures: 1, BreakerCooldown: time.Minute})
	t.Cleanup(g.Close)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	lk := protocol.NewLocker(protocol.LockerConfig{Client: rdb, Guard: g, Params: protocol.Params{LockTTL: time.Second, GenTTL: time.Minute},
		TokenPrefix: "t.", Go: func(fn func()) { wg.Go(fn) }})
	srv.Kill()
	ks := protocol.KeysFor(protocol.ValueKey("p:", "k"))
	if _, _, _, err := lk.Acquire(ctx, ks, protocol.ModeNormal, 0); err == nil {
		t.Fatal("Acquire on a killed server = nil error, want one")
	}
	if _, _, _, err := lk.Acquire(ctx, ks, protocol.ModeNormal, 0); !errors.Is(err, redisguard.ErrSkipped) {
		t.Errorf("Acquire with the breaker open = %v, want ErrSkipped", err)
	}
	if a := lk.AcquireBatch(ctx, []string{ks[0]}, nil, []int{0})[0]; !a.Down {
		t.Errorf("AcquireBatch with the breaker open = %+v, want Down", a)
	}
}
