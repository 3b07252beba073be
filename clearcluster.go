package cacheaside

import (
	"context"

	"github.com/cacheaside/cacheaside/internal/tagclock"
	"github.com/redis/go-redis/v9"
)

// Clear and tags on a Redis Cluster (docs/consistency.md): the clock key
// lives in one slot, so a read of values that carries the clock (see
// tagclock.Lease) carries instead the clock replica (tagclock.Replicas)
// that the values' node owns, in the same round trip; Clear and InvalidateTag advance the clock key as elsewhere
// and then raise every replica to the new clock before they return.

// newReplicas returns the clock replicas of the prefix on a Cluster
// client, nil on anything else (where reads carry the clock key itself).
func (c *Cache[K, V]) newReplicas(rdb redis.UniversalClient) *tagclock.Replicas {
	if _, ok := rdb.(*redis.ClusterClient); !ok {
		return nil
	}
	return tagclock.NewReplicas(c.cfg.prefix, c.guard.NodeOf)
}

// readClockKey returns the clock key a read of vkey carries: on a Cluster
// the replica vkey's node owns, or the clock key itself when the node owns
// none or the slot map is not known yet (then the read crosses nodes: two
// round trips, in parallel, still correct).
func (c *Cache[K, V]) readClockKey(vkey string) string {
	if c.replicas == nil {
		return c.clockKey
	}
	if k := c.replicas.For(c.guard.NodeOf(vkey)); k != "" {
		return k
	}
	return c.clockKey
}

// raiseReplicas raises every clock replica to clock and cleared, the
// clock key's value after a Clear or InvalidateTag: one pipeline of
// scripts per node, the nodes concurrently, each under its node's breaker
// and budget (under WithReplicaAcks, each with a WAIT: replicas.go). It
// returns nil only when every replica was written.
func (c *Cache[K, V]) raiseReplicas(ctx context.Context, clock, cleared uint64) error {
	if c.replicas == nil {
		return nil
	}
	keys := c.replicas.Keys()
	if c.lock.Acked() {
		return c.raiseReplicasAcked(ctx, keys, clock, cleared)
	}
	cmds := make([]*redis.Cmd, len(keys))
	_, err := c.guard.PerNode(ctx, keys, nil, func(ctx context.Context, idx []int) error {
		return c.guard.PipelineScript(ctx, idx, func(p redis.Pipeliner, i int, eval bool) *redis.Cmd {
			if eval {
				return tagclock.Raise.Eval(ctx, p, keys[i:i+1], clock, cleared)
			}
			return tagclock.Raise.EvalSha(ctx, p, keys[i:i+1], clock, cleared)
		}, cmds)
	}, nil)
	if err != nil {
		return err
	}
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil {
			return err
		}
	}
	return nil
}

// withClocks returns vkeys with the clock keys their reads carry appended,
// each once, and clockOf[i], the index in keys of vkeys[i]'s clock key. It
// never writes into vkeys' backing array.
func (c *Cache[K, V]) withClocks(vkeys []string) (keys []string, clockOf []int) {
	if c.clockKey == "" {
		return vkeys, nil // a Ring: no clock (ErrClearUnsupported)
	}
	n := len(vkeys)
	keys = vkeys[:n:n]
	clockOf = make([]int, n)
	for i, vk := range vkeys {
		ck := c.readClockKey(vk)
		j := n
		for j < len(keys) && keys[j] != ck {
			j++
		}
		if j == len(keys) {
			keys = append(keys, ck)
		}
		clockOf[i] = j
	}
	return keys, clockOf
}
