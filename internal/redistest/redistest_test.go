package redistest_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestMain fails the package if any test leaves goroutines behind. No
// third-party goroutine is ignored: go-redis clients are closed in cleanups
// and every redis-server is reaped before the tests end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestServerLifecycle(t *testing.T) {
	s := redistest.Start(t)
	if !strings.HasPrefix(s.Addr(), "127.0.0.1:") || s.Port() == 0 {
		t.Fatalf("Addr() = %q, Port() = %d; want a loopback address with a port", s.Addr(), s.Port())
	}
	firstPID := s.PID()
	if firstPID == 0 {
		t.Fatal("PID() = 0 for a running server")
	}

	ctx := context.Background()
	c := s.Client(t)
	if err := c.Set(ctx, "k", "v1", time.Minute).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v1" {
		t.Fatalf("GET = %q, %v; want v1", got, err)
	}
	if pttl := s.CLI(t, "PTTL", "k"); pttl == "" || strings.HasPrefix(pttl, "-") {
		t.Fatalf("PTTL = %q; want a positive TTL", pttl)
	}
	if got := s.CLI(t, "GET", "missing"); got != "" {
		t.Fatalf("CLI GET missing = %q; want empty", got)
	}

	// A frozen server accepts connections but never answers.
	tc := redis.NewClient(&redis.Options{Addr: s.Addr(), ContextTimeoutEnabled: true, MaxRetries: -1})
	t.Cleanup(func() { _ = tc.Close() })
	if err := tc.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING before freeze: %v", err)
	}
	s.Freeze()
	start := time.Now()
	dctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err := tc.Get(dctx, "k").Result()
	cancel()
	elapsed := time.Since(start)
	if err == nil || errors.Is(err, redis.Nil) {
		s.Thaw()
		t.Fatalf("GET on frozen server: err = %v; want a timeout", err)
	}
	if elapsed < 150*time.Millisecond || elapsed > 2*time.Second {
		t.Errorf("GET on frozen server failed after %v; want about 200ms", elapsed)
	}
	s.Thaw()
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v1" {
		t.Fatalf("GET after thaw = %q, %v; want v1", got, err)
	}

	s.Kill()
	s.Kill() // idempotent
	if s.PID() != 0 {
		t.Fatalf("PID() = %d after Kill; want 0", s.PID())
	}
	if err := syscall.Kill(firstPID, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("process %d still exists after Kill (kill -0: %v)", firstPID, err)
	}
	// tc does not retry; the default client c would spend about 1.8s here
	// retrying dials (DialerRetries 5 x MaxRetries 3) before failing.
	if _, err := tc.Get(ctx, "k").Result(); err == nil || errors.Is(err, redis.Nil) {
		t.Fatalf("GET on killed server: err = %v; want a connection error", err)
	}

	port := s.Port()
	s.Restart()
	if s.Port() != port {
		t.Fatalf("port changed across Restart: %d -> %d", port, s.Port())
	}
	if pid := s.PID(); pid == 0 || pid == firstPID {
		t.Fatalf("PID() after Restart = %d; want a new process (old %d)", pid, firstPID)
	}
	if got := s.CLI(t, "GET", "k"); got != "" {
		t.Fatalf("GET after Restart = %q; want empty", got)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING through the old client after Restart: %v", err)
	}

	// Restart also works on a running server, and Start after Kill.
	s.Restart()
	s.Kill()
	s.Start()
	if got := s.CLI(t, "PING"); got != "PONG" {
		t.Fatalf("PING after Kill+Start = %q; want PONG", got)
	}
}

func TestExtraArgs(t *testing.T) {
	s := redistest.Start(t, "--maxmemory", "1mb", "--maxmemory-policy", "allkeys-lru")
	if got := s.CLI(t, "CONFIG", "GET", "maxmemory"); got != "map[maxmemory:1048576]" {
		t.Fatalf("CONFIG GET maxmemory = %q; want 1mb", got)
	}
	if got := s.CLI(t, "CONFIG", "GET", "save"); got != "map[save:]" {
		t.Fatalf("CONFIG GET save = %q; want persistence off", got)
	}
	s.Restart()
	if got := s.CLI(t, "CONFIG", "GET", "maxmemory-policy"); got != "map[maxmemory-policy:allkeys-lru]" {
		t.Fatalf("CONFIG GET maxmemory-policy after Restart = %q; want allkeys-lru", got)
	}
}

func TestParallelServersGetDistinctPorts(t *testing.T) {
	servers := make([]*redistest.Server, 3)
	seen := map[int]bool{}
	for i := range servers {
		servers[i] = redistest.Start(t)
		if seen[servers[i].Port()] {
			t.Fatalf("port %d handed out twice", servers[i].Port())
		}
		seen[servers[i].Port()] = true
	}
	for i, s := range servers {
		s.CLI(t, "SET", "id", string(rune('a'+i)))
	}
	for i, s := range servers {
		if got, want := s.CLI(t, "GET", "id"), string(rune('a'+i)); got != want {
			t.Fatalf("server %d: GET id = %q; want %q", i, got, want)
		}
	}
}

func TestCleanupKillsProcess(t *testing.T) {
	var pid int
	t.Run("inner", func(t *testing.T) {
		pid = redistest.Start(t).PID()
	})
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("redis-server %d survived its test (kill -0: %v)", pid, err)
	}
	// The frozen case: cleanup must kill a stopped process too.
	t.Run("frozen", func(t *testing.T) {
		s := redistest.Start(t)
		pid = s.PID()
		s.Freeze()
	})
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Fatalf("frozen redis-server %d survived its test (kill -0: %v)", pid, err)
	}
}

func TestConcurrentAccessors(t *testing.T) {
	s := redistest.Start(t)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				_, _, _ = s.Addr(), s.Port(), s.PID()
				s.Kill() // concurrent with Restart: either order must be safe
			}
		}
	}()
	for range 3 {
		s.Restart()
	}
	close(stop)
	<-done
	s.Restart()
	if got := s.CLI(t, "PING"); got != "PONG" {
		t.Fatalf("PING after concurrent Kill/Restart = %q; want PONG", got)
	}
}

func TestMissingBinaryFails(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv(redistest.ServerEnv, "")
	if msg := startFailure(t); !strings.Contains(msg, "apt-get install redis-server") {
		t.Fatalf("Start without redis-server failed with %q; want an install hint", msg)
	}
}

// TestServerEnvMissingBinaryFails: a CACHEASIDE_TEST_SERVER that names no
// executable fails the test and says which variable is wrong, instead of
// falling back to redis-server.
func TestServerEnvMissingBinaryFails(t *testing.T) {
	t.Setenv(redistest.ServerEnv, "/nonexistent/valkey-server")
	if msg := startFailure(t); !strings.Contains(msg, redistest.ServerEnv) || !strings.Contains(msg, "/nonexistent/valkey-server") {
		t.Fatalf("Start with %s=/nonexistent/valkey-server failed with %q; want the variable and its value named", redistest.ServerEnv, msg)
	}
}

// startFailure runs Start, which must fail, and returns its Fatalf message.
func startFailure(t *testing.T) string {
	ft := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		redistest.Start(ft)
	}()
	<-done
	if ft.msg == "" {
		t.Fatal("Start succeeded, want it to fail")
	}
	return ft.msg
}

// TestServerIsTheChosenBinary: the server that answers is the one
// ServerBinary names (Redis by default, Valkey under
// CACHEASIDE_TEST_SERVER=.../valkey-server), as its INFO server says.
func TestServerIsTheChosenBinary(t *testing.T) {
	b, err := redistest.ServerBinary()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("server: %s", b)
	info := redistest.Start(t).CLI(t, "INFO", "server")
	// Valkey 8 reports valkey_version and server_name:valkey, and keeps
	// redis_version (7.2.4) for clients that read it.
	if want := b.Name + "_version:" + b.Version; !strings.Contains(info, want) {
		t.Fatalf("INFO server lacks %q:\n%s", want, info)
	}
	if b.IsValkey() != strings.Contains(info, "server_name:valkey") {
		t.Fatalf("ServerBinary() = %s, but INFO server says:\n%s", b, info)
	}
}

// fatalRecorder captures the message of a Fatalf and stops the goroutine,
// without failing the real test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (f *fatalRecorder) Helper() {}
