package redisguard

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// What a caller that batches reads of several callers into one call
// (cacheaside's readbatch) needs from the guard: the node a key's call
// goes to, and the breaker's count of the reads a failed batch stood for.

// NodeOf returns the address of the Cluster node that owns key, or "" on
// a single server, a Sentinel primary, or before the client has a slot map.
func (g *Guard) NodeOf(key string) string { return g.cbs.node(key) }

// Failed counts n reads of key's node that failed with err without a call
// of their own (the other keys of a failed batch, or the keys of batches
// failed unsent behind it) as failures of the node's breaker, when err is
// a failure (IsOutage) and the call was not skipped: the breaker then
// opens after as many failed reads as without batching.
func (g *Guard) Failed(key string, err error, n int) {
	nd := g.cbs.forKey(key)
	if nd.cb == nil || !IsOutage(err) || errors.Is(err, ErrSkipped) {
		return
	}
	for range n {
		nd.clean.failedNow(nd.cb, err)
	}
}

// MGetNode reads keys, all on one node, in one round trip, outside the
// guard (run it in a call of Do): one MGET, or on a Cluster one pipeline
// of an MGET per slot. vals[i] receives the value of keys[i], nil when
// missing, of another Redis type, or empty (see fillRaw). It keeps no
// reference to keys, so a caller's slice of a few keys can stay on its
// stack (the hit path).
func (g *Guard) MGetNode(ctx context.Context, keys []string, vals [][]byte) error {
	if g.cbs.cluster == nil {
		cmd := mget(ctx, keys)
		_ = g.rdb.Process(ctx, cmd)
		res, err := cmd.Result()
		if err != nil {
			return err
		}
		fillRaw(vals, nil, res)
		return nil
	}
	bySlot := make(map[uint16][]int)
	for i, k := range keys {
		s := Slot(k)
		bySlot[s] = append(bySlot[s], i)
	}
	// The keys of each slot's MGET copied out before the pipeline, whose
	// function escapes: keys does not.
	perSlot := make([][]string, 0, len(bySlot))
	idxs := make([][]int, 0, len(bySlot))
	for _, idx := range bySlot {
		ks := make([]string, len(idx))
		for j, i := range idx {
			ks[j] = keys[i]
		}
		perSlot = append(perSlot, ks)
		idxs = append(idxs, idx)
	}
	cmds := make([]*redis.StringSliceCmd, 0, len(perSlot))
	_, err := g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, ks := range perSlot {
			cmd := mget(ctx, ks)
			_ = p.Process(ctx, cmd)
			cmds = append(cmds, cmd)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for n, cmd := range cmds {
		fillRaw(vals, idxs[n], cmd.Val())
	}
	return nil
}

// mget returns the command MGET keys. It is built here rather than by
// rdb.MGet, whose variadic keys escape with the call, and it reads the
// reply as strings (a StringSliceCmd) rather than as a []any
// (rdb.MGet's SliceCmd), which costs each value one allocation less: its
// box in an interface. The price is that a missing key and an empty string
// read alike, as ""; fillRaw takes both for missing. No value the cache
// writes is empty: an empty value key is foreign bytes, which the miss
// path's lock script reads again and finds unreadable, and an empty clock
// key is no clock, which tagclock.Ensure returns as it is.
func mget(ctx context.Context, keys []string) *redis.StringSliceCmd {
	args := make([]any, 1+len(keys))
	args[0] = "mget"
	for i, k := range keys {
		args[1+i] = k
	}
	return redis.NewStringSliceCmd(ctx, args...)
}
