package protocol

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Replica acknowledgement: with Acks set, the overwrites of Set and
// Invalidate (and the clock scripts of Clear and InvalidateTag, through
// ScriptsAcked) wait (Redis WAIT) until enough replicas have them, so that a
// primary that fails right after does not hand its replica the old value.
// WAIT counts the writes of the connection it is sent on, so each node's
// scripts and its WAIT go out in one pipeline on one connection of that
// node (a Cluster node's own client, not the Cluster client, which may
// send a keyless WAIT to any node).

// Acks is what the overwrites wait for: Replicas replicas (0: none) within
// Timeout, a whole number of milliseconds.
type Acks struct {
	Replicas int
	Timeout  time.Duration
}

// ErrNotReplicated is wrapped by the error of an overwrite that Redis
// applied but fewer replicas than Acks.Replicas confirmed within
// Acks.Timeout.
var ErrNotReplicated = errors.New("cacheaside: not confirmed by enough replicas")

// NodeClients is what acknowledged writes need of the client: one node's
// client for a key (on a Cluster, its primary's).
type NodeClients interface {
	NodeFor(ctx context.Context, key string) (redis.Cmdable, error)
}

// ClientNodes returns the NodeClients of rdb: the Cluster's primary for a
// key, else rdb itself (a single server or a Sentinel failover client,
// whose pipelines use one connection).
func ClientNodes(rdb redis.UniversalClient) NodeClients { return clientNodes{rdb} }

type clientNodes struct{ rdb redis.UniversalClient }

func (c clientNodes) NodeFor(ctx context.Context, key string) (redis.Cmdable, error) {
	if cc, ok := c.rdb.(*redis.ClusterClient); ok {
		return cc.MasterForKey(ctx, key)
	}
	return c.rdb, nil
}

// overwriteAcked runs the Overwrite script for each of vkeys (with
// args(i)) and then WAIT, one pipeline per node, the nodes concurrently
// (ScriptsAcked). args(i) must return the same arguments each time (one
// generation token per write), so that a pipeline sent again leaves what
// the first left.
func (lk *Locker) overwriteAcked(ctx context.Context, vkeys []string, args func(i int) []any) (errOf []error, err error) {
	return lk.ScriptsAcked(ctx, vkeys, func(ctx context.Context, p redis.Pipeliner, i int) *redis.Cmd {
		return Overwrite.Eval(ctx, p, KeysFor(vkeys[i]), args(i)...)
	})
}

// Acked reports whether the Locker's Acks ask for replicas.
func (lk *Locker) Acked() bool { return lk.acks.Replicas > 0 }

// ScriptsAcked sends call(i), a script of keys[i] (and keys of its slot),
// for each of keys and then WAIT for the Locker's Acks, one pipeline per
// node on one connection of that node, the nodes concurrently. It returns
// each key's error (its node's: a failed call, an error reply, or
// ErrNotReplicated, which means every script of the node ran) and the
// first error of each node joined. call must use EVAL, not EVALSHA: a
// NOSCRIPT reply would leave the WAIT counting no write. Acknowledged
// writes are rare enough for the script's bytes.
//
// A node's pipeline is patient (the guard's DoWaitingPatient): it is not
// cut at the budget, and one that waited for a pooled connection past its
// time while the node answered others is sent again, scripts and WAIT, up
// to the guard's limit since the first try. So every call must be safe to
// run twice: an overwrite with the same arguments (the same bytes and
// generation), a clock advanced again, a replica raised again.
func (lk *Locker) ScriptsAcked(ctx context.Context, keys []string, call func(ctx context.Context, p redis.Pipeliner, i int) *redis.Cmd) (errOf []error, err error) {
	groups := map[string][]int{}
	var order []string
	for i, k := range keys {
		n := lk.guard.NodeOf(k)
		if _, ok := groups[n]; !ok {
			order = append(order, n)
		}
		groups[n] = append(groups[n], i)
	}
	errs := make([]error, len(order))
	var wg sync.WaitGroup
	for j, n := range order {
		wg.Go(func() { errs[j] = lk.scriptsNodeAcked(ctx, keys, groups[n], call) })
	}
	wg.Wait()
	errOf = make([]error, len(keys))
	for j, n := range order {
		for _, i := range groups[n] {
			errOf[i] = errs[j]
		}
	}
	return errOf, errors.Join(errs...)
}

// scriptsNodeAcked is ScriptsAcked for the keys idx of one node.
func (lk *Locker) scriptsNodeAcked(ctx context.Context, keys []string, idx []int, call func(ctx context.Context, p redis.Pipeliner, i int) *redis.Cmd) error {
	want := int64(lk.acks.Replicas)
	ms := lk.acks.Timeout.Milliseconds()
	var got int64
	err := lk.guard.DoWaitingPatient(ctx, keys[idx[0]], lk.acks.Timeout, func(ctx context.Context) error {
		c, err := lk.nodes.NodeFor(ctx, keys[idx[0]])
		if err != nil {
			return err
		}
		cmds := make([]*redis.Cmd, len(idx))
		var wait *redis.IntCmd
		_, err = c.Pipelined(ctx, func(p redis.Pipeliner) error {
			for j, i := range idx {
				cmds[j] = call(ctx, p, i)
			}
			wait = redis.NewIntCmd(ctx, "wait", want, ms)
			_ = p.Process(ctx, wait)
			return nil
		})
		for _, cmd := range cmds {
			if e := cmd.Err(); e != nil {
				return e
			}
		}
		if err != nil {
			return err
		}
		got = wait.Val()
		return nil
	})
	if err != nil {
		return err
	}
	if got < want {
		return fmt.Errorf("%w: %d of %d replicas within %v", ErrNotReplicated, got, want, lk.acks.Timeout)
	}
	return nil
}
