package redisguard

import (
	"context"
	"errors"
	"strings"
	"sync"
	"unsafe"

	"github.com/redis/go-redis/v9"
)

// Redis I/O for many keys at once: script calls and MGETs in pipelines,
// split by Cluster node.

// PerNode runs fn, a Redis call, once per Cluster node that owns some of
// the keys keys[i] for i in idx (nil: all of keys; once in all on anything
// but a Cluster) with the indexes of that node's keys, each as Do runs a
// call for that node's first key (its breaker and budget), the nodes
// concurrently. undo, if not nil, is DoUndo's undo for the indexes of a
// call the guard stopped waiting for. errOf holds each index's error (nil
// where its node's call succeeded, and for indexes not in idx); joined
// joins them. fn may still be running for the indexes whose error wraps
// ErrIncomplete: whatever it writes for them must not be read.
func (g *Guard) PerNode(ctx context.Context, keys []string, idx []int, fn func(ctx context.Context, idx []int) error, undo func(idx []int)) (errOf []error, joined error) {
	return g.perNode(keys, idx, func(idx []int) error {
		call := func(ctx context.Context) error { return fn(ctx, idx) }
		if undo == nil {
			return g.Do(ctx, keys[idx[0]], call)
		}
		return g.DoUndo(ctx, keys[idx[0]], call, func() { undo(idx) })
	})
}

// perNode runs run once per Cluster node that owns some of keys[i] for i
// in idx (nil: all), with that node's indexes, the nodes concurrently, and
// returns PerNode's errOf and joined.
func (g *Guard) perNode(keys []string, idx []int, run func(idx []int) error) (errOf []error, joined error) {
	errOf = make([]error, len(keys))
	if idx == nil {
		idx = make([]int, len(keys))
		for i := range idx {
			idx[i] = i
		}
	}
	if len(idx) == 0 {
		return errOf, nil
	}
	groups := g.cbs.byNode(keys, idx)
	errs := make([]error, len(groups))
	if len(groups) == 1 {
		errs[0] = run(groups[0])
	} else {
		var wg sync.WaitGroup
		for n, idx := range groups {
			wg.Go(func() { errs[n] = run(idx) })
		}
		wg.Wait()
	}
	for n, idx := range groups {
		for _, i := range idx {
			errOf[i] = errs[n]
		}
	}
	return errOf, errors.Join(errs...)
}

// PipelineScript sends the script calls idx through the guard's client in
// one pipeline with EVALSHA and resends with EVAL the calls that found the
// script missing (a Redis that restarted, or a Cluster node that never saw
// it). call(p, i, eval) queues call i on p (with EVAL when eval is set,
// else EVALSHA) and returns its command; cmds[i] receives the final
// command of call i. It is meant to run inside a PerNode call for idx: its
// error is the call's outcome (an outage of the pipeline), while error
// replies of single commands are read from cmds.
func (g *Guard) PipelineScript(ctx context.Context, idx []int, call func(p redis.Pipeliner, i int, eval bool) *redis.Cmd, cmds []*redis.Cmd) error {
	_, err := g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, i := range idx {
			cmds[i] = call(p, i, false)
		}
		return nil
	})
	var again []int
	for _, i := range idx {
		if e := cmds[i].Err(); e != nil && strings.HasPrefix(e.Error(), "NOSCRIPT") {
			again = append(again, i)
		}
	}
	if len(again) == 0 {
		if err != nil && !IsOutage(err) {
			return nil // per-command errors are read from cmds
		}
		return err
	}
	_, err = g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, i := range again {
			cmds[i] = call(p, i, true)
		}
		return nil
	})
	if err != nil && !IsOutage(err) {
		return nil
	}
	return err
}

// MGet reads keys through the guard: on a single server one MGET; on a
// Redis Cluster one MGET per hash slot, pipelined per node so that each
// node costs one round trip under its own breaker and budget. The result
// has nil for missing keys; failed[i] is the error of key i's node, and
// out[i] must not be read where it is not nil (use Reply).
func (g *Guard) MGet(ctx context.Context, keys []string) (out [][]byte, failed []error, err error) {
	out = make([][]byte, len(keys))
	failed, err = g.PerNode(ctx, keys, nil, func(ctx context.Context, idx []int) error {
		ks := make([]string, len(idx))
		for j, i := range idx {
			ks[j] = keys[i]
		}
		vals := make([][]byte, len(idx))
		if err := g.MGetNode(ctx, ks, vals); err != nil {
			return err
		}
		for j, i := range idx {
			out[i] = vals[j]
		}
		return nil
	}, nil)
	return out, failed, err
}

// Reply returns key i's reply from MGet's results: its bytes (nil when
// missing) where its node's call completed, else its node's error and no
// bytes. raws[i] must not even be read where failed[i] is set: the
// abandoned call may still be writing it.
func Reply(raws [][]byte, failed []error, i int) ([]byte, error) {
	if failed[i] != nil {
		return nil, failed[i]
	}
	return raws[i], nil
}

// fillRaw stores MGET replies vals into out, at idx[j] for reply j (or at
// j when idx is nil): nil for "", which is a missing key or an empty
// string (mget). The bytes are the reply strings' own, not a copy, as
// go-redis's StringCmd.Bytes hands them out: go-redis reads each reply
// into a buffer of its own and keeps no reference to it, and nothing in
// this module writes to what a read returns.
func fillRaw(out [][]byte, idx []int, vals []string) {
	for j, s := range vals {
		i := j
		if idx != nil {
			i = idx[j]
		}
		if s != "" {
			out[i] = unsafe.Slice(unsafe.StringData(s), len(s))
		}
	}
}
