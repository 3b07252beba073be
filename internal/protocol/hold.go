package protocol

import (
	"context"
	"errors"
	"time"

	"github.com/cacheaside/cacheaside/internal/redisguard"
	"github.com/redis/go-redis/v9"
)

// Held is a fill lock to keep or give back: its token and value key.
type Held struct{ Token, VKey string }

// HeldBy returns the lock of lease l on the key whose value key is vkey:
// none for a load without the lock.
func HeldBy(l Lease, vkey string) []Held {
	if l.Token == "" {
		return nil
	}
	return []Held{{l.Token, vkey}}
}

// Extend resets the TTL of the locks held to the lock TTL (the Hold
// script), in one pipeline per node, and returns those found no longer
// held. A lock whose call failed is not among them: the next beat tries
// again.
func (lk *Locker) Extend(ctx context.Context, held []Held) (lost []Held) {
	vkeys := make([]string, len(held))
	for i, h := range held {
		vkeys[i] = h.VKey
	}
	cmds := make([]*redis.Cmd, len(held))
	args := func(i int) []any { return HoldArgs(held[i].Token, lk.params.LockTTL) }
	errOf, err := lk.guard.PerNode(ctx, vkeys, nil, func(ctx context.Context, idx []int) error {
		return lk.guard.PipelineScript(ctx, idx, scriptCall(ctx, Hold, vkeys, args), cmds)
	}, nil)
	if err != nil && ctx.Err() == nil {
		lk.failed(err)
	}
	for i, h := range held {
		if errOf[i] != nil || cmds[i] == nil {
			continue // the call failed or still runs: its reply must not be read
		}
		if n, err := cmds[i].Int64(); err == nil && n == 0 {
			lost = append(lost, h)
		}
	}
	return lost
}

// scriptCall returns PipelineScript's call for script s on the keys of
// vkeys[i] with args(i).
func scriptCall(ctx context.Context, s *redis.Script, vkeys []string, args func(i int) []any) func(p redis.Pipeliner, i int, eval bool) *redis.Cmd {
	return func(p redis.Pipeliner, i int, eval bool) *redis.Cmd {
		if eval {
			return s.Eval(ctx, p, KeysFor(vkeys[i]), args(i)...)
		}
		return s.EvalSha(ctx, p, KeysFor(vkeys[i]), args(i)...)
	}
}

// ReleaseAll gives back locks whose Redis call failed, in the background
// and past the guard (this process's breaker may be open, or the call
// lost, while other processes reach Redis fine and would wait for these
// locks for a whole lock TTL), one pipeline for all. At most maxReleases
// releases run at once; locks given back while that many run wait for
// one of them to take them in its next pipeline, never dropped: a latency
// spike that cuts many acquires and fills at once must not leave their
// keys locked. It must be called from work the cache tracks.
func (lk *Locker) ReleaseAll(held []Held) {
	if len(held) == 0 {
		return
	}
	lk.relMu.Lock()
	if lk.relRunning >= maxReleases {
		lk.relPending = append(lk.relPending, held...)
		lk.relMu.Unlock()
		return
	}
	lk.relRunning++
	lk.relMu.Unlock()
	lk.spawn(func() {
		for len(held) > 0 {
			lk.releaseNow(held)
			lk.relMu.Lock()
			held, lk.relPending = lk.relPending, nil
			if len(held) == 0 {
				lk.relRunning--
			}
			lk.relMu.Unlock()
		}
	})
}

// releaseNow gives back held on the calling goroutine, past the guard, in
// one pipeline (compare-and-delete by a token unique to the lock: harmless
// for a lock that was never taken or is no longer ours, and when sent
// again). A pipeline that fails for want of Redis (a socket timeout of the
// timeout clone, a dropped connection) is sent again, with a backoff, for
// up to the lock TTL, after which the locks are gone anyway, or until the
// cache closes (LockerConfig.Done). It serves
// goroutines that must not wait on the guard (an abandoned call completing
// late): the pool may be busy with other late calls, so the Redis timeout
// would be too short to get a connection.
func (lk *Locker) releaseNow(held []Held) {
	if len(held) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), lk.params.LockTTL)
	defer cancel()
	for attempt := 0; ; attempt++ {
		err := lk.guard.Bypass(ctx, func(ctx context.Context) error {
			_, err := lk.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, h := range held {
					Release.Eval(ctx, p, KeysFor(h.VKey), h.Token)
				}
				return nil
			})
			return err
		})
		if !redisguard.IsOutage(err) {
			return
		}
		t := time.NewTimer(releaseBackoff(attempt))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		case <-lk.done:
			t.Stop()
			return
		}
	}
}

// releaseBackoff is the wait before sending a failed release again:
// 10ms, doubling up to 200ms.
func releaseBackoff(attempt int) time.Duration {
	return min(10*time.Millisecond<<min(attempt, 5), 200*time.Millisecond)
}

// Overwrite replaces (env not nil, living px) or deletes (env nil) the
// value of vkey, deletes its lock and writes a new generation: Set and
// Invalidate of one key (the Overwrite script), waiting for replicas when
// the Locker's Acks ask for them (acks.go). A try cut while Redis answered
// slowly is sent again (the guard's DoPatient, or DoWaitingPatient with
// Acks): it writes the same bytes under a newer generation (with Acks,
// the same one), which only fails one more fill in flight.
func (lk *Locker) Overwrite(ctx context.Context, vkey string, env []byte, px time.Duration) error {
	if lk.acks.Replicas > 0 {
		args := lk.params.OverwriteArgs(env, px, lk.NewToken())
		_, err := lk.overwriteAcked(ctx, []string{vkey}, func(int) []any { return args })
		return err
	}
	return lk.guard.DoPatient(ctx, vkey, func(ctx context.Context) error {
		return Overwrite.Run(ctx, lk.rdb, KeysFor(vkey), lk.params.OverwriteArgs(env, px, lk.NewToken())...).Err()
	})
}

// Invalidate deletes the values of vkeys, their locks, and writes each a
// new generation, in one pipeline per node, and waits for replicas when
// the Locker's Acks ask for them (acks.go). It returns the first error of
// each node whose keys may not all have been invalidated, and errOf[i],
// key i's own error (nil when it was invalidated): the keys to try again.
// A node's call cut while Redis answered slowly is sent again
// (PerNodePatient, or ScriptsAcked's DoWaitingPatient with Acks):
// deleting again and rewriting the same generation leaves what the first
// try left.
func (lk *Locker) Invalidate(ctx context.Context, vkeys []string) (errOf []error, err error) {
	cmds := make([]*redis.Cmd, len(vkeys))
	args := lk.params.OverwriteArgs(nil, 0, lk.NewToken())
	if lk.acks.Replicas > 0 {
		return lk.overwriteAcked(ctx, vkeys, func(int) []any { return args })
	}
	errOf, err = lk.guard.PerNodePatient(ctx, vkeys, nil, func(ctx context.Context, idx []int) error {
		err := lk.guard.PipelineScript(ctx, idx, scriptCall(ctx, Overwrite, vkeys, func(int) []any { return args }), cmds)
		if err != nil {
			return err
		}
		for _, i := range idx {
			if err := cmds[i].Err(); err != nil {
				return err
			}
		}
		return nil
	})
	for i := range errOf {
		// A node's call fails with its first key's error; the others of
		// its keys have their own (nil if they ran). A call still running
		// (ErrIncomplete) must not be read.
		if errOf[i] != nil && !errors.Is(errOf[i], redisguard.ErrIncomplete) && cmds[i] != nil {
			errOf[i] = cmds[i].Err()
		}
	}
	return errOf, err
}
