package protocol

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cacheaside/cacheaside/internal/redisguard"
	"github.com/redis/go-redis/v9"
)

// The Locker runs the scripts of scripts.go against Redis, through the
// guard: acquire, fill, hold and release for one key (this file), for a
// batch of keys (batch.go), the heartbeat's extension and the overwrites
// of Set and Invalidate (hold.go). Each step is written once, here, and
// every path that takes, fills or gives back a fill lock calls it. It
// gives back the locks whose calls failed or were abandoned, so that no
// key stays locked for a whole lock TTL.

// Guard is what the Locker needs of the Redis guard (redisguard.Guard):
// running one call for a key, or one per node for many keys, under the
// budget and the breakers, and past them.
type Guard interface {
	Do(ctx context.Context, key string, fn func(context.Context) error) error
	DoUndo(ctx context.Context, key string, fn func(context.Context) error, undo func()) error
	DoPatient(ctx context.Context, key string, fn func(context.Context) error) error
	PerNode(ctx context.Context, keys []string, idx []int, fn func(ctx context.Context, idx []int) error, undo func(idx []int)) ([]error, error)
	PerNodePatient(ctx context.Context, keys []string, idx []int, fn func(ctx context.Context, idx []int) error) ([]error, error)
	PipelineScript(ctx context.Context, idx []int, call func(p redis.Pipeliner, i int, eval bool) *redis.Cmd, cmds []*redis.Cmd) error
	Bypass(ctx context.Context, fn func(context.Context) error) error
	DoWaiting(ctx context.Context, key string, wait time.Duration, fn func(context.Context) error) error
	DoWaitingPatient(ctx context.Context, key string, wait time.Duration, fn func(context.Context) error) error
	NodeOf(key string) string
	HonoursDeadlines() bool
}

// LockerConfig is what a Locker needs.
type LockerConfig struct {
	Client redis.Cmdable // the client the guard's calls go through
	Guard  Guard
	Params Params
	// TokenPrefix starts every lock token and generation the Locker
	// makes: unique to the process (a random string).
	TokenPrefix string
	// Go runs fn on a goroutine the cache's Close waits for. The Locker
	// calls it only from work the cache tracks.
	Go func(fn func())
	// Fault, if not nil, is told of each Redis call that failed for a
	// reason the caller does not see (a release, a heartbeat, a batch):
	// the cache counts it, never returns it.
	Fault func(err error)
	// Acks, when Acks.Replicas > 0, makes Overwrite and Invalidate wait
	// for replicas (acks.go), through Nodes.
	Acks  Acks
	Nodes NodeClients
	// Done, if not nil, is closed when the cache closes: a background
	// release then stops sending its pipeline again (it still sends it
	// once), so that Close does not wait a lock TTL for a Redis that is
	// down.
	Done <-chan struct{}
}

// Locker runs the fill protocol's Redis I/O. It is safe for concurrent
// use.
type Locker struct {
	rdb    redis.Cmdable
	guard  Guard
	params Params
	prefix string
	seq    atomic.Uint64
	spawn  func(fn func())
	fault  func(err error)
	done   <-chan struct{}
	acks   Acks
	nodes  NodeClients

	relMu      sync.Mutex
	relRunning int    // background releases running (ReleaseAll), at most maxReleases
	relPending []Held // locks waiting for one of them
}

// maxReleases bounds the background releases running at once.
const maxReleases = 16

// NewLocker returns the Locker of cfg.
func NewLocker(cfg LockerConfig) *Locker {
	return &Locker{
		rdb:    cfg.Client,
		guard:  cfg.Guard,
		params: cfg.Params,
		prefix: cfg.TokenPrefix,
		spawn:  cfg.Go,
		fault:  cfg.Fault,
		done:   cfg.Done,
		acks:   cfg.Acks,
		nodes:  cfg.Nodes,
	}
}

// NewToken returns a token unique to this process and call: the prefix
// and a counter. Lock tokens and generations use it.
func (lk *Locker) NewToken() string {
	return lk.prefix + strconv.FormatUint(lk.seq.Add(1), 36)
}

// failed reports a Redis fault the caller does not see.
func (lk *Locker) failed(err error) {
	if lk.fault != nil {
		lk.fault(err)
	}
}

// Acquire runs the Acquire script for ks in mode, with a new token. For
// StateValue it returns the raw value. For ModeRefresh, freshAfter is the
// remaining life above which the value counts as already refreshed.
func (lk *Locker) Acquire(ctx context.Context, ks Keys, mode string, freshAfter time.Duration) (State, string, Lease, error) {
	token := lk.NewToken()
	var res []any
	get := func(ctx context.Context) error {
		var err error
		res, err = Acquire.Run(ctx, lk.rdb, ks, lk.params.AcquireArgs(token, mode, freshAfter)...).Slice()
		return err
	}
	// A call the guard stopped waiting for may still take the lock: give it
	// back when it does, or the key would stall every process for a whole
	// lock TTL. On the abandoning path undo runs when the late call
	// completes; with a client that honours deadlines the request may have
	// reached the server, so release now (compare-and-delete: harmless if
	// the lock was never taken).
	undo := func() {
		// Release unless the reply proves the lock was not taken: a call
		// that failed late may still have run on the server.
		if st, _, _, err := ParseAcquire(res, token); err != nil || st == StateAcquired {
			lk.releaseNow([]Held{{token, ks[0]}})
		}
	}
	err := lk.guard.DoUndo(ctx, ks[0], get, undo)
	if err != nil && lk.guard.HonoursDeadlines() && !errors.Is(err, redisguard.ErrSkipped) {
		lk.Release(context.WithoutCancel(ctx), ks, token)
	}
	if err != nil {
		return 0, "", Lease{}, err
	}
	st, raw, l, err := ParseAcquire(res, token)
	l.Replace = mode == ModeRefresh
	return st, raw, l, err
}

// Fill runs the Fill script for envelope env, which lives px in Redis,
// under lease l. On an error it gives the lock back if it may still be
// held.
func (lk *Locker) Fill(ctx context.Context, ks Keys, l Lease, env []byte, px time.Duration, negative bool) (FillResult, error) {
	var n int64
	run := func(ctx context.Context) error {
		var err error
		n, err = Fill.Run(ctx, lk.rdb, ks, FillArgs(l, env, px, negative)...).Int64()
		return err
	}
	// A fill that fails may never have reached the server (a pool wait cut
	// short, a dropped connection), leaving the lock for its whole TTL. Give
	// it back: compare-and-delete is harmless if the fill did run, since a
	// fill that ran deleted the lock or found it was no longer ours.
	undo := func() {
		if l.Token != "" {
			lk.releaseNow([]Held{{l.Token, ks[0]}})
		}
	}
	err := lk.guard.DoUndo(ctx, ks[0], run, undo)
	if err != nil {
		if l.Token != "" && lockLeft(err) {
			lk.Release(ctx, ks, l.Token)
		}
		return 0, err // n may still be written by an abandoned call
	}
	return FillResult(n), nil
}

// GiveBack returns the lock of l, if any, after a load that wrote nothing:
// it holds it for l.HoldOnError after a load that failed (loadFailed: an
// error other than not found), and releases it otherwise.
func (lk *Locker) GiveBack(ctx context.Context, ks Keys, l Lease, loadFailed bool) {
	switch {
	case l.Token == "":
	case l.HoldOnError > 0 && loadFailed:
		_ = lk.guard.Do(context.WithoutCancel(ctx), ks[0], func(ctx context.Context) error {
			return Hold.Run(ctx, lk.rdb, ks, HoldArgs(l.Token, l.HoldOnError)...).Err()
		})
	default:
		lk.Release(ctx, ks, l.Token)
	}
}

// Release gives the lock of token back after a load that wrote nothing,
// so that waiters take over at once instead of after the lock TTL. When
// the guard's call fails it retries past the guard, in the background.
func (lk *Locker) Release(ctx context.Context, ks Keys, token string) {
	// Not cancelled with the load: a lock left behind would stall the key
	// for a whole lock TTL.
	ctx = context.WithoutCancel(ctx)
	err := lk.guard.Do(ctx, ks[0], func(ctx context.Context) error {
		return Release.Run(ctx, lk.rdb, ks, token).Err()
	})
	if err != nil {
		lk.failed(err)
		lk.ReleaseAll([]Held{{token, ks[0]}})
	}
}

// lockLeft reports whether a fill lock may still be held after a fill
// call that failed with err: it failed outright (an error reply, a
// timeout on a client that honours deadlines) or was never sent. A call
// still running past the budget is left to its undo.
func lockLeft(err error) bool {
	return err != nil && (!errors.Is(err, redisguard.ErrIncomplete) || errors.Is(err, redisguard.ErrSkipped))
}
