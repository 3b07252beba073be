package cacheaside

import (
	"context"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Redis I/O for many keys at once: script calls and MGETs in pipelines,
// split by Cluster node (see perNode in breakers.go).

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

// mget reads vkeys: one MGET per node (on a single server, one MGET), on
// a Redis Cluster one MGET per hash slot, pipelined so that each node costs
// one round trip, each node under its own breaker and budget. The result
// has nil for missing keys; failed[i] is the error of key i's node, and
// out[i] must not be read where it is not nil.
func (c *Cache[K, V]) mget(ctx context.Context, vkeys []string) (out [][]byte, failed []error, err error) {
	out = make([][]byte, len(vkeys))
	_, cluster := c.rdb.(*redis.ClusterClient)
	failed, err = c.perNode(ctx, vkeys, func(ctx context.Context, idx []int) error {
		if !cluster {
			vals, err := c.rdb.MGet(ctx, vkeys...).Result()
			if err != nil {
				return err
			}
			fillRaw(out, nil, vals)
			return nil
		}
		bySlot := make(map[uint16][]int)
		for _, i := range idx {
			s := clusterSlot(vkeys[i])
			bySlot[s] = append(bySlot[s], i)
		}
		cmds := make([]*redis.SliceCmd, 0, len(bySlot))
		groups := make([][]int, 0, len(bySlot))
		_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, slotIdx := range bySlot {
				ks := make([]string, len(slotIdx))
				for j, i := range slotIdx {
					ks[j] = vkeys[i]
				}
				cmds = append(cmds, p.MGet(ctx, ks...))
				groups = append(groups, slotIdx)
			}
			return nil
		})
		if err != nil {
			return err
		}
		for g, cmd := range cmds {
			fillRaw(out, groups[g], cmd.Val())
		}
		return nil
	}, nil)
	return out, failed, err
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
