package cacheaside

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cacheaside/cacheaside/internal/protocol"
	"github.com/cacheaside/cacheaside/internal/tagclock"
	"github.com/redis/go-redis/v9"
)

// Replica acknowledgement (WithReplicaAcks): Redis replicates writes
// asynchronously, so a primary that acknowledged an Invalidate and failed
// before its replicas had it lets the promoted replica serve the old
// value. With WithReplicaAcks, Set and Invalidate send each node's writes
// and a WAIT on one connection of that node (internal/protocol, acks.go)
// and return only once enough replicas have them, or with
// ErrNotReplicated; so do Clear and InvalidateTag, for the clock script
// and, on a Cluster, for each node's clock replicas.

// ErrNotReplicated is matched (with errors.Is) by the error of a
// [Cache.Set], [Cache.Invalidate], [Cache.Clear] or [Cache.InvalidateTag]
// that Redis applied on the primary but that fewer
// replicas than [WithReplicaAcks] asks for confirmed within its timeout.
// The change is in place on the primary and reaches the replicas as
// replication catches up; until then a failover may lose it. It does not
// match [ErrRedisUnavailable].
var ErrNotReplicated = protocol.ErrNotReplicated

// checkReplicaAcks reports an error when rdb cannot wait as long as
// WithReplicaAcks asks: a pipeline's replies are read under the client's
// ReadTimeout, which must outlast the WAIT plus the Redis timeout, and a
// Ring has no single primary per key to wait on.
func checkReplicaAcks(rdb redis.UniversalClient, cfg *config) error {
	if cfg.replicaAcks == 0 {
		return nil
	}
	var read time.Duration
	switch c := rdb.(type) {
	case *redis.Client:
		read = c.Options().ReadTimeout
	case *redis.ClusterClient:
		read = c.Options().ReadTimeout
	case *redis.Ring:
		return fmt.Errorf("WithReplicaAcks: not supported on a redis.Ring")
	}
	if need := cfg.replicaWait + cfg.redisTTL; read > 0 && read < need {
		return fmt.Errorf("WithReplicaAcks: timeout %v plus the Redis timeout %v exceeds the client's ReadTimeout %v, which would cut the WAIT", cfg.replicaWait, cfg.redisTTL, read)
	}
	return nil
}

// runClockAcked is runClock under WithReplicaAcks: the clock script and a
// WAIT on one connection of the clock key's node. Patient as runClock is
// (ScriptsAcked may send the pipeline again): a clock advanced twice only
// invalidates once more what it invalidated; the reply read is the last
// try's.
func (c *Cache[K, V]) runClockAcked(ctx context.Context, keys []string, mode string) (string, error) {
	var cmd *redis.Cmd
	floor := c.clock.Clock()
	_, err := c.lock.ScriptsAcked(ctx, keys[:1], func(ctx context.Context, p redis.Pipeliner, _ int) *redis.Cmd {
		cmd = tagclock.Invalidate.Eval(ctx, p, keys, mode, floor)
		return cmd
	})
	if err != nil && !errors.Is(err, ErrNotReplicated) {
		return "", err // cmd may still be written by an abandoned call
	}
	res, cerr := cmd.Text()
	if cerr != nil {
		return "", cerr
	}
	return res, err
}

// raiseReplicasAcked is raiseReplicas under WithReplicaAcks: each node's
// raises and a WAIT on one connection of that node. A raise sent again
// (ScriptsAcked is patient) leaves what the first left: it only raises.
func (c *Cache[K, V]) raiseReplicasAcked(ctx context.Context, keys []string, clock, cleared uint64) error {
	_, err := c.lock.ScriptsAcked(ctx, keys, func(ctx context.Context, p redis.Pipeliner, i int) *redis.Cmd {
		return tagclock.Raise.Eval(ctx, p, keys[i:i+1], clock, cleared)
	})
	return err
}
