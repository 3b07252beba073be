package redistest

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// clusterSize is the number of nodes: three primaries, one replica each.
	clusterSize = 6
	// clusterReadyTimeout bounds how long the cluster may take to report
	// cluster_state:ok on every node after creation.
	clusterReadyTimeout = 30 * time.Second
)

// Cluster is a six-node Redis Cluster (three primaries with one replica each)
// owned by one test. Every node is a Server started with cluster mode on; all
// of them are killed when the test finishes.
type Cluster struct {
	tb    testing.TB
	nodes []*Server
}

// StartCluster starts six redis-server processes on free loopback ports with
// cluster mode enabled (node timeout 1s, no persistence), joins them with
// redis-cli --cluster create --cluster-replicas 1, and waits until every
// node reports cluster_state:ok and every replica has finished its first
// sync (so that it can be promoted). It fails the test if redis-server or
// redis-cli is missing or the cluster does not form.
func StartCluster(tb testing.TB) *Cluster {
	tb.Helper()
	cli := cliBin(tb)
	confDir := tb.TempDir()
	c := &Cluster{tb: tb}
	for i := range clusterSize {
		c.nodes = append(c.nodes, start(tb, true,
			"--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(confDir, "nodes-"+strconv.Itoa(i)+".conf"),
			"--cluster-node-timeout", "1000",
			// Start replication at once instead of after 5s.
			"--repl-diskless-sync-delay", "0",
		))
	}
	args := []string{"--cluster", "create"}
	args = append(args, c.Addrs()...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("redistest: %s --cluster create: %v\n%s", filepath.Base(cli), err, out)
	}
	c.waitOK(ctx)
	return c
}

// waitOK polls every running node until all report cluster_state:ok with
// all 16384 slots served and every replica's link to its primary is up.
func (c *Cluster) waitOK(ctx context.Context) {
	c.tb.Helper()
	var last string
	for {
		ok := true
		for _, n := range c.nodes {
			if n.PID() == 0 {
				continue
			}
			info, err := nodeCmd(ctx, n.Addr(), "CLUSTER", "INFO")
			if err != nil {
				ok, last = false, n.Addr()+": "+err.Error()
				break
			}
			if !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_ok:16384") {
				ok, last = false, n.Addr()+": "+info
				break
			}
			// A replica that has not finished its first sync cannot be
			// promoted: wait until every replica is in sync.
			repl, err := nodeCmd(ctx, n.Addr(), "INFO", "replication")
			if err != nil || (strings.Contains(repl, "role:slave") && !strings.Contains(repl, "master_link_status:up")) {
				ok, last = false, n.Addr()+": replica not in sync: "+repl
				break
			}
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			c.tb.Fatalf("redistest: cluster did not reach cluster_state:ok: %v; last: %s", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitOK waits up to 30s until every running node reports
// cluster_state:ok, e.g. after a failover.
func (c *Cluster) WaitOK() {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), clusterReadyTimeout)
	defer cancel()
	c.waitOK(ctx)
}

// Addrs returns the addresses of all six nodes, primaries and replicas.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// Nodes returns the six node servers, in start order.
func (c *Cluster) Nodes() []*Server { return append([]*Server(nil), c.nodes...) }

// Client returns a new go-redis ClusterClient with default options apart
// from Addrs, closed when tb finishes.
func (c *Cluster) Client(tb testing.TB) *redis.ClusterClient {
	tb.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	tb.Cleanup(func() { _ = cc.Close() })
	return cc
}

// Slot returns the hash slot of key, as computed by CLUSTER KEYSLOT.
func (c *Cluster) Slot(key string) int {
	c.tb.Helper()
	for _, n := range c.nodes {
		if n.PID() == 0 {
			continue
		}
		out, err := nodeCmd(context.Background(), n.Addr(), "CLUSTER", "KEYSLOT", key)
		if err != nil {
			continue
		}
		slot, err := strconv.Atoi(out)
		if err != nil {
			c.tb.Fatalf("redistest: CLUSTER KEYSLOT %q = %q: %v", key, out, err)
		}
		return slot
	}
	c.tb.Fatalf("redistest: CLUSTER KEYSLOT %q: no node answered", key)
	return 0
}

// PrimaryFor returns the node that is currently primary for key's slot,
// according to CLUSTER NODES on the first running node that answers, or
// nil while the slot has no healthy owner (its primary is marked failed
// and no replica has taken over yet).
func (c *Cluster) PrimaryFor(key string) *Server {
	c.tb.Helper()
	slot := c.Slot(key)
	for _, n := range c.nodes {
		if n.PID() == 0 {
			continue
		}
		out, err := nodeCmd(context.Background(), n.Addr(), "CLUSTER", "NODES")
		if err != nil {
			continue
		}
		addr, ok := ownerOf(out, slot)
		if !ok {
			continue
		}
		for _, m := range c.nodes {
			if m.Addr() == addr {
				return m
			}
		}
		c.tb.Fatalf("redistest: slot %d owned by unknown node %s", slot, addr)
	}
	return nil
}

// WaitReplicated waits until every running replica has processed every
// write its primary had acknowledged when WaitReplicated was called, so
// that a replica promoted after a kill has all of it. It fails the test
// after 10s.
func (c *Cluster) WaitReplicated() {
	c.tb.Helper()
	WaitReplicated(c.tb, c.nodes...)
}

// ReplicasOf returns the running nodes that replicate primary, by each
// node's own INFO replication (the primary's CLUSTER NODES may not list a
// fresh replica yet: it learns the roles by gossip).
func (c *Cluster) ReplicasOf(primary *Server) []*Server {
	c.tb.Helper()
	var replicas []*Server
	for _, n := range c.nodes {
		if n.PID() == 0 || n == primary {
			continue
		}
		info, err := replInfo(context.Background(), n.Addr())
		if err != nil {
			c.tb.Fatalf("redistest: %v", err)
		}
		if info["role"] == "slave" && net.JoinHostPort(info["master_host"], info["master_port"]) == primary.Addr() {
			replicas = append(replicas, n)
		}
	}
	return replicas
}

// Owners returns, for each key, the node that is currently primary for
// its slot (nil while the slot has no healthy owner), with one CLUSTER
// NODES and one pipeline of CLUSTER KEYSLOT: cheaper than PrimaryFor per
// key when picking many keys.
func (c *Cluster) Owners(keys []string) []*Server {
	c.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, n := range c.nodes {
		if n.PID() == 0 {
			continue
		}
		nodes, err := nodeCmd(ctx, n.Addr(), "CLUSTER", "NODES")
		if err != nil {
			continue
		}
		rc := redis.NewClient(&redis.Options{Addr: n.Addr(), PoolSize: 1, MaxRetries: -1})
		cmds, err := rc.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, k := range keys {
				p.ClusterKeySlot(ctx, k)
			}
			return nil
		})
		_ = rc.Close()
		if err != nil {
			continue
		}
		owners := make([]*Server, len(keys))
		for i, cmd := range cmds {
			addr, ok := ownerOf(nodes, int(cmd.(*redis.IntCmd).Val()))
			if !ok {
				continue
			}
			for _, m := range c.nodes {
				if m.Addr() == addr {
					owners[i] = m
				}
			}
		}
		return owners
	}
	c.tb.Fatalf("redistest: no cluster node answered CLUSTER NODES and CLUSTER KEYSLOT")
	return nil
}

// KillPrimaryFor kills (SIGKILL) the primary that owns key's slot and
// returns it. Its replica is promoted by the cluster after the node timeout.
func (c *Cluster) KillPrimaryFor(key string) *Server {
	c.tb.Helper()
	p := c.PrimaryFor(key)
	if p == nil {
		c.tb.Fatalf("redistest: key %q has no healthy primary to kill", key)
	}
	p.Kill()
	return p
}

// ownerOf parses CLUSTER NODES output and returns the address of the
// connected primary serving slot.
func ownerOf(nodes string, slot int) (string, bool) {
	for line := range strings.SplitSeq(strings.TrimSpace(nodes), "\n") {
		f := strings.Fields(line)
		if len(f) < 8 || !strings.Contains(f[2], "master") || strings.Contains(f[2], "fail") {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being migrated or imported
			}
			lo, hi, isRange := strings.Cut(r, "-")
			a, err := strconv.Atoi(lo)
			if err != nil {
				continue
			}
			b := a
			if isRange {
				if b, err = strconv.Atoi(hi); err != nil {
					continue
				}
			}
			if slot >= a && slot <= b {
				return addr, true
			}
		}
	}
	return "", false
}

// nodeCmd runs one command on a short-lived plain connection to addr.
func nodeCmd(ctx context.Context, addr string, args ...string) (string, error) {
	rc := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 2 * time.Second})
	defer func() { _ = rc.Close() }()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	a := make([]any, len(args))
	for i, s := range args {
		a[i] = s
	}
	res, err := rc.Do(ctx, a...).Result()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", addr, strings.Join(args, " "), err)
	}
	return fmt.Sprint(res), nil
}
