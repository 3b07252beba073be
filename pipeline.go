package cacheaside

import (
	"context"
	"errors"
	"strings"
	"sync"

	"github.com/redis/go-redis/v9"
)

// Redis I/O for many keys at once: script calls and MGETs in pipelines,
// split by Cluster node.

// perNode runs fn, a Redis call, once per Cluster node that owns some of
// the keys vkeys[i] for i in idx (nil: all of vkeys; once in all on
// anything but a Cluster) with the indexes of that node's keys, each under its node's breaker and budget, the nodes
// concurrently. undo, if not nil, is doUndo's undo for the indexes of a
// call the guard stopped waiting for. errOf holds each index's error (nil
// where its node's call succeeded); joined joins them. fn may still be
// running for the indexes whose error wraps errIncomplete: whatever it
// writes for them must not be read.
func (c *Cache[K, V]) perNode(ctx context.Context, vkeys []string, idx []int, fn func(ctx context.Context, idx []int) error, undo func(idx []int)) (errOf []error, joined error) {
	errOf = make([]error, len(vkeys))
	if idx == nil {
		idx = indexes(len(vkeys))
	}
	if len(idx) == 0 {
		return errOf, nil
	}
	run := func(idx []int) error {
		call := func(ctx context.Context) error { return fn(ctx, idx) }
		if undo == nil {
			return c.guard.do(ctx, vkeys[idx[0]], call)
		}
		return c.guard.doUndo(ctx, vkeys[idx[0]], call, func() { undo(idx) })
	}
	groups := c.guard.cbs.byNode(vkeys, idx)
	errs := make([]error, len(groups))
	if len(groups) == 1 {
		errs[0] = run(groups[0])
	} else {
		var wg sync.WaitGroup
		for g, idx := range groups {
			wg.Go(func() { errs[g] = run(idx) })
		}
		wg.Wait()
	}
	for g, idx := range groups {
		for _, i := range idx {
			errOf[i] = errs[g]
		}
	}
	return errOf, errors.Join(errs...)
}

// pipelineScript sends the script calls idx in one pipeline with EVALSHA
// and resends with EVAL the calls that found the script missing (a Redis
// that restarted, or a Cluster node that never saw it). cmds[i] receives
// the final command of call i.
func (c *Cache[K, V]) pipelineScript(ctx context.Context, s *redis.Script, idx []int, call func(p redis.Pipeliner, i int, eval bool) *redis.Cmd, cmds []*redis.Cmd) error {
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
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
		if err != nil && !isOutage(err) {
			return nil // per-command errors are read from cmds
		}
		return err
	}
	_, err = c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, i := range again {
			cmds[i] = call(p, i, true)
		}
		return nil
	})
	if err != nil && !isOutage(err) {
		return nil
	}
	return err
}

// mget reads vkeys: on a single server one MGET; on a Redis Cluster one
// MGET per hash slot, pipelined per node so that each node costs one round
// trip under its own breaker and budget. The result has nil for missing
// keys; failed[i] is the error of key i's node, and out[i] must not be read
// where it is not nil.
func (c *Cache[K, V]) mget(ctx context.Context, vkeys []string) (out [][]byte, failed []error, err error) {
	out = make([][]byte, len(vkeys))
	failed, err = c.perNode(ctx, vkeys, nil, func(ctx context.Context, idx []int) error {
		ks := make([]string, len(idx))
		for j, i := range idx {
			ks[j] = vkeys[i]
		}
		vals := make([][]byte, len(idx))
		if err := c.mgetNode(ctx, ks, vals); err != nil {
			return err
		}
		for j, i := range idx {
			out[i] = vals[j]
		}
		return nil
	}, nil)
	return out, failed, err
}

// mgetReply returns key i's reply from mget's results: its bytes (nil
// when missing) where its node's call completed, else its node's error
// and no bytes. raws[i] must not even be read where failed[i] is set: the
// abandoned call may still be writing it.
func mgetReply(raws [][]byte, failed []error, i int) ([]byte, error) {
	if failed[i] != nil {
		return nil, failed[i]
	}
	return raws[i], nil
}

// indexes returns 0, 1, …, n-1.
func indexes(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// fillRaw stores MGET replies vals into out, at idx[j] for reply j (or at j
// when idx is nil).
func fillRaw(out [][]byte, idx []int, vals []any) {
	for j, v := range vals {
		i := j
		if idx != nil {
			i = idx[j]
		}
		if s, ok := v.(string); ok {
			out[i] = []byte(s)
		}
	}
}
