package redisguard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// replyError is an error reply as go-redis reports it: any error with a
// RedisError method.
type replyError string

func (e replyError) Error() string { return string(e) }
func (replyError) RedisError()     {}

// refusedDial returns the error of a TCP dial to a loopback port where
// nothing listens.
func refusedDial(t *testing.T) error {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		_ = conn.Close()
		t.Fatalf("dial %s succeeded, want connection refused", addr)
	}
	return err
}

func TestIsOutage(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"miss", redis.Nil, false},
		{"wrapped miss", fmt.Errorf("get: %w", redis.Nil), false},
		{"deadline", context.DeadlineExceeded, true},
		// The breaker excludes cancellation separately; as an error it is
		// no answer from Redis.
		{"canceled", context.Canceled, true},
		{"dial refused", refusedDial(t), true},
		{"connection closed", io.EOF, true},
		{"pool timeout", redis.ErrPoolTimeout, true},
		{"client closed", redis.ErrClosed, true},
		{"skipped", ErrSkipped, true},
		{"over budget", fmt.Errorf("%w (%v)", errBudget, 100*time.Millisecond), true},
		// A call slow while its node answered others is no outage.
		{"slow", fmt.Errorf("%w: %w", ErrSlow, context.DeadlineExceeded), false},
		{"overdue", errOverdue, false},
		{"no slot, node answering", errSkippedSlow, false},
		{"OOM", replyError("OOM command not allowed when used memory > 'maxmemory'."), false},
		{"OOM in script", replyError("OOM command not allowed when used memory > 'maxmemory'. script: 5b1b, on @user_script:9."), false},
		{"wrong type", replyError("WRONGTYPE Operation against a key holding the wrong kind of value"), false},
		{"generic", replyError("ERR wrong number of arguments for 'get' command"), false},
		{"noscript", redis.ErrNoScript, false},
		{"LOADING", replyError("LOADING Redis is loading the dataset in memory"), true},
		{"READONLY", replyError("READONLY You can't write against a read only replica."), true},
		{"MASTERDOWN", replyError("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'."), true},
		{"CLUSTERDOWN", replyError("CLUSTERDOWN The cluster is down"), true},
		{"TRYAGAIN", replyError("TRYAGAIN Multiple keys request during rehashing of slot"), true},
		{"wrapped LOADING", fmt.Errorf("acquire: %w", replyError("LOADING Redis is loading the dataset in memory")), true},
	}
	for _, tt := range tests {
		if got := IsOutage(tt.err); got != tt.want {
			t.Errorf("IsOutage(%s: %v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

// TestIsOutageRealReplies classifies the errors go-redis returns for
// replies from real servers in those states.
func TestIsOutageRealReplies(t *testing.T) {
	ctx := context.Background()
	client := func(srv *redistest.Server) *redis.Client {
		rdb := redis.NewClient(&redis.Options{Addr: srv.Addr(), MaxRetries: -1})
		t.Cleanup(func() { _ = rdb.Close() })
		return rdb
	}
	check := func(what string, err error, want bool) {
		t.Helper()
		if err == nil {
			t.Errorf("%s: got no error, want one", what)
			return
		}
		if got := IsOutage(err); got != want {
			t.Errorf("IsOutage(%s: %v) = %v, want %v", what, err, got, want)
		}
	}

	full := redistest.Start(t, "--maxmemory", "1", "--maxmemory-policy", "noeviction")
	fullClient := client(full)
	check("SET on a full server", fullClient.Set(ctx, "k", "v", 0).Err(), false)
	if err := fullClient.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) || IsOutage(err) {
		t.Errorf("GET of a missing key = %v, IsOutage %v; want redis.Nil, not an outage", err, IsOutage(err))
	}
	check("EVAL writing on a full server", fullClient.Eval(ctx, "return redis.call('SET', KEYS[1], 'v')", []string{"k"}).Err(), false)

	// A replica whose master is unreachable and that does not serve stale data.
	replica := redistest.Start(t)
	replica.CLI(t, "CONFIG", "SET", "replica-serve-stale-data", "no")
	replica.CLI(t, "REPLICAOF", "127.0.0.1", "1")
	replicaClient := client(replica)
	check("SET on a replica", replicaClient.Set(ctx, "k", "v", 0).Err(), true)
	check("GET on a replica cut off from its master", replicaClient.Get(ctx, "k").Err(), true)

	// A server loading its dataset, slowly (key-load-delay is in µs per key).
	loading := redistest.Start(t, "--enable-debug-command", "yes",
		"--key-load-delay", "2000", "--loading-process-events-interval-bytes", "1024")
	loading.CLI(t, "DEBUG", "POPULATE", "500", "k", "1024")
	// The reload takes 500 keys x 2ms = 1s on an idle machine; under load
	// it outran the client's 3s read timeout once ("DEBUG RELOAD = read
	// tcp ...: i/o timeout"). The reloader waits as long as it takes.
	reloader := redis.NewClient(&redis.Options{Addr: loading.Addr(), MaxRetries: -1, ReadTimeout: time.Minute})
	t.Cleanup(func() { _ = reloader.Close() })
	probe := client(loading)
	reloaded := make(chan error, 1)
	go func() { reloaded <- reloader.Do(ctx, "DEBUG", "RELOAD").Err() }()
	var loadErr error
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if err := probe.Get(ctx, "k:1").Err(); err != nil && redis.IsLoadingError(err) {
			loadErr = err
			break
		}
	}
	check("GET while loading", loadErr, true)
	if err := <-reloaded; err != nil {
		t.Errorf("DEBUG RELOAD = %v", err)
	}

	dead := redistest.Start(t)
	deadClient := client(dead)
	dead.Kill()
	check("GET on a killed server", deadClient.Get(ctx, "k").Err(), true)
}
