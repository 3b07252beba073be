package redistest

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Replication is asynchronous: a primary acknowledges a write before its
// replicas have it, and a replica promoted after its primary was killed
// lacks whatever was still in flight. A test that kills a primary and
// expects the data to survive must first wait until the replicas caught
// up; this file is that wait, and a way to check what a replica holds.
//
// WAIT is no such wait when sent on a connection of its own: it counts the
// replicas that acknowledged the writes of the connection it is sent on,
// and a fresh connection wrote nothing, so it returns at once.

// replicationTimeout bounds how long a replica may take to catch up.
const replicationTimeout = 10 * time.Second

// replInfo returns the fields of INFO replication on addr.
func replInfo(ctx context.Context, addr string) (map[string]string, error) {
	out, err := nodeCmd(ctx, addr, "INFO", "replication")
	if err != nil {
		return nil, err
	}
	fields := map[string]string{}
	for l := range strings.SplitSeq(out, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(l), ":"); ok {
			fields[k] = v
		}
	}
	return fields, nil
}

// StartReplica starts a redis-server that replicates primary (--replicaof,
// plus args) and waits until it has caught up (WaitReplicated). Like
// Start, it fails the test if the server does not come up.
func StartReplica(tb testing.TB, primary *Server, args ...string) *Server {
	tb.Helper()
	r := Start(tb, append([]string{"--replicaof", "127.0.0.1", strconv.Itoa(primary.Port())}, args...)...)
	WaitReplicated(tb, primary, r)
	return r
}

// WaitReplicated waits until every running server among servers that is
// a replica has processed every write its primary had acknowledged when
// WaitReplicated was called: its slave_repl_offset reaches the primary's
// master_repl_offset read first, with the link up. Each replica's primary
// must be among servers. Valkey 8 and Redis 7 name these fields alike. It
// fails the test after 10s.
func WaitReplicated(tb testing.TB, servers ...*Server) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), replicationTimeout)
	defer cancel()
	// The primaries' offsets first, then the replicas: whatever a primary
	// had acknowledged before this call is at or below the offset read.
	target := map[string]int64{}
	var replicas []string
	for _, s := range servers {
		if s.PID() == 0 {
			continue
		}
		info, err := replInfo(ctx, s.Addr())
		if err != nil {
			tb.Fatalf("redistest: %v", err)
		}
		switch info["role"] {
		case "master":
			off, err := strconv.ParseInt(info["master_repl_offset"], 10, 64)
			if err != nil {
				tb.Fatalf("redistest: %s: master_repl_offset %q: %v", s.Addr(), info["master_repl_offset"], err)
			}
			target[s.Addr()] = off
		case "slave":
			replicas = append(replicas, s.Addr())
		default:
			tb.Fatalf("redistest: %s: unknown role %q in INFO replication", s.Addr(), info["role"])
		}
	}
	for _, addr := range replicas {
		var last error
		for {
			if last = caughtUp(ctx, addr, target); last == nil {
				break
			}
			select {
			case <-ctx.Done():
				tb.Fatalf("redistest: replica %s did not catch up with its primary within %v: %v", addr, replicationTimeout, last)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
}

// caughtUp returns nil once the replica at addr has processed target[its
// primary], or why not yet.
func caughtUp(ctx context.Context, addr string, target map[string]int64) error {
	info, err := replInfo(ctx, addr)
	if err != nil {
		return err
	}
	primary := net.JoinHostPort(info["master_host"], info["master_port"])
	want, ok := target[primary]
	if !ok {
		return fmt.Errorf("its primary %s is not a running primary of this setup", primary)
	}
	if info["master_link_status"] != "up" {
		return fmt.Errorf("master_link_status:%s", info["master_link_status"])
	}
	got, err := strconv.ParseInt(info["slave_repl_offset"], 10, 64)
	if err != nil {
		return fmt.Errorf("slave_repl_offset %q: %w", info["slave_repl_offset"], err)
	}
	if got < want {
		return fmt.Errorf("slave_repl_offset %d < primary's master_repl_offset %d", got, want)
	}
	return nil
}

// CountExisting returns how many of keys exist on this server, read on
// the server itself: on a Cluster replica too (the connection is put in
// READONLY mode), where a Cluster client would follow the redirect to the
// primary.
func (s *Server) CountExisting(tb testing.TB, keys ...string) int {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rc := redis.NewClient(&redis.Options{Addr: s.Addr(), PoolSize: 1, MaxRetries: -1})
	defer func() { _ = rc.Close() }()
	conn := rc.Conn()
	defer func() { _ = conn.Close() }()
	// Outside cluster mode READONLY is an error, and not needed.
	if err := conn.ReadOnly(ctx).Err(); err != nil && !strings.Contains(err.Error(), "cluster") {
		tb.Fatalf("redistest: %s READONLY: %v", s.Addr(), err)
	}
	cmds, err := conn.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Exists(ctx, k)
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("redistest: %s EXISTS of %d keys: %v", s.Addr(), len(keys), err)
	}
	n := 0
	for _, c := range cmds {
		n += int(c.(*redis.IntCmd).Val())
	}
	return n
}
