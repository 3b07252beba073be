// Package redistest starts throwaway Redis or Valkey server processes for
// tests: single servers, 3+3 Clusters and primary/replica pairs with
// Sentinels.
//
// Every server listens on a free loopback port, keeps no data on disk and is
// killed when the test that started it finishes. Tests can also kill, freeze,
// thaw and restart a server to simulate crashes, stalls and data loss.
//
// The server binary is redis-server (Redis 7 or newer) from PATH, or the
// redis-server or valkey-server (Valkey 8) named by the environment variable
// CACHEASIDE_TEST_SERVER (see [ServerEnv]); the first server a test binary
// starts logs which one. When the binary is missing, Start fails the test
// with an installation hint instead of skipping, so a misconfigured machine
// never passes silently.
package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// readyTimeout bounds how long a freshly started process may take to
	// answer PING.
	readyTimeout = 10 * time.Second
	// rebindTimeout bounds how long Start keeps retrying a busy port when a
	// server comes back on the port it used before.
	rebindTimeout = 5 * time.Second
	// freshPortAttempts is how many different free ports the first start
	// tries before giving up.
	freshPortAttempts = 5
	// logTailBytes is how much of the server log failure messages quote.
	logTailBytes = 2048
)

// errExited reports that the server exited before it answered PING, which
// almost always means that it could not bind its port.
var errExited = errors.New("server exited before answering PING")

// Server is a redis-server process owned by one test. Its methods are safe
// for concurrent use. The ones that can fail (Start, Restart, Freeze and
// Thaw) report to the testing.TB given to the package-level Start, so they
// must be called from the goroutine running that test, as with
// testing.TB.Fatalf.
type Server struct {
	tb      testing.TB
	bin     string
	dir     string
	logPath string
	args    []string

	mu   sync.Mutex
	port int
	bus  int      // the cluster bus port of a cluster node; 0 for others
	proc *process // nil while the server is not running
}

// process is one running redis-server together with a channel that is
// closed once the process has been reaped.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start launches redis-server on 127.0.0.1 at a free port, without
// persistence (--save "" --appendonly no), with protected mode off and a
// fresh working directory from tb.TempDir. Extra command-line arguments such
// as "--maxmemory", "1mb" are appended after the defaults and may override
// them. Start returns once the server answers PING and registers a cleanup
// that kills it. It fails the test if redis-server is not installed or does
// not come up.
func Start(tb testing.TB, args ...string) *Server {
	tb.Helper()
	return start(tb, false, args...)
}

// start is Start; a cluster node (clusterBus) also gets a free cluster
// bus port, picked again with the port at each attempt: a port picked
// once and lost to another process (two test suites at once) would
// otherwise fail every attempt.
func start(tb testing.TB, clusterBus bool, args ...string) *Server {
	tb.Helper()
	bin := serverBin(tb)
	dir := tb.TempDir()
	s := &Server{
		tb:      tb,
		bin:     bin,
		dir:     dir,
		logPath: filepath.Join(dir, "redis.log"),
		args:    append([]string(nil), args...),
	}
	// Registered after TempDir, so it runs before the directory is removed.
	tb.Cleanup(s.Kill)

	s.mu.Lock()
	defer s.mu.Unlock()
	var lastErr error
	for range freshPortAttempts {
		port, err := pickPort(tb)
		if err != nil {
			tb.Fatalf("redistest: pick a free port: %v", err)
		}
		s.port = port
		if clusterBus {
			// The bus defaults to port+10000, which overflows for high
			// ephemeral ports: an explicit free one instead.
			if s.bus, err = pickPort(tb); err != nil {
				tb.Fatalf("redistest: pick a free cluster bus port: %v", err)
			}
		}
		if lastErr = s.launchLocked(); lastErr == nil {
			return s
		}
		if !errors.Is(lastErr, errExited) {
			break
		}
	}
	tb.Fatalf("redistest: start redis-server: %v\n%s", lastErr, s.logTail())
	return nil
}

// Addr returns the server address in host:port form, e.g. "127.0.0.1:6380".
func (s *Server) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port()))
}

// Port returns the TCP port the server listens on. It stays the same across
// Kill, Start and Restart.
func (s *Server) Port() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.port
}

// PID returns the process ID of the running redis-server, or 0 while the
// server is killed.
func (s *Server) PID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// Kill sends SIGKILL to the running process and waits until it has exited
// and been reaped. Killing a frozen process works too. Calling Kill on a
// server that is not running does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
}

// Freeze suspends the process with SIGSTOP. The kernel keeps accepting
// connections on its port, but no command is answered until Thaw.
func (s *Server) Freeze() {
	s.tb.Helper()
	s.signal(syscall.SIGSTOP)
}

// Thaw resumes a process suspended by Freeze with SIGCONT.
func (s *Server) Thaw() {
	s.tb.Helper()
	s.signal(syscall.SIGCONT)
}

// Start starts a new redis-server on the same port, in the same working
// directory and with the same arguments after Kill, and waits until it
// answers PING. It starts empty, unless the server was started with
// persistence (say "--appendonly", "yes", "--appendfsync", "always"): it
// then loads what the killed one persisted. If the port is
// briefly unavailable it retries for a few seconds. Start fails the test if
// the server is already running or does not come up.
func (s *Server) Start() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.tb.Fatalf("redistest: Start called while redis-server %s is running (pid %d)", s.addrLocked(), s.proc.cmd.Process.Pid)
	}
	s.restartLocked()
}

// Restart kills the running process, if any, and starts a new empty one on
// the same port; it is equivalent to Kill followed by Start. All data is
// lost and existing client connections are broken.
func (s *Server) Restart() {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.killLocked()
	s.restartLocked()
}

// Client returns a new go-redis client for the server, with go-redis
// default options apart from Addr. The client is closed when tb finishes.
func (s *Server) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// CLI runs one command on a short-lived connection and returns the reply
// formatted with fmt.Sprint, so that tests can inspect server state, as in
// CLI(t, "PTTL", key). A nil reply, such as GET on a missing key, yields the
// empty string. Any other error fails the test.
func (s *Server) CLI(tb testing.TB, args ...string) string {
	tb.Helper()
	if len(args) == 0 {
		tb.Fatalf("redistest: CLI needs a command")
	}
	c := redis.NewClient(&redis.Options{Addr: s.Addr(), PoolSize: 1, MaxRetries: -1})
	defer func() { _ = c.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmdArgs := make([]any, len(args))
	for i, a := range args {
		cmdArgs[i] = a
	}
	res, err := c.Do(ctx, cmdArgs...).Result()
	if errors.Is(err, redis.Nil) {
		return ""
	}
	if err != nil {
		tb.Fatalf("redistest: %s %s: %v", s.Addr(), strings.Join(args, " "), err)
	}
	return fmt.Sprint(res)
}

func (s *Server) signal(sig syscall.Signal) {
	s.tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		s.tb.Fatalf("redistest: cannot send %v: redis-server %s is not running", sig, s.addrLocked())
	}
	if err := s.proc.cmd.Process.Signal(sig); err != nil {
		s.tb.Fatalf("redistest: send %v to redis-server pid %d: %v", sig, s.proc.cmd.Process.Pid, err)
	}
}

func (s *Server) addrLocked() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// killLocked kills and reaps the running process, if any. A frozen process
// is killed too: SIGKILL does not need the process to run.
func (s *Server) killLocked() {
	p := s.proc
	if p == nil {
		return
	}
	s.proc = nil
	_ = p.cmd.Process.Kill() // fails only if the process already exited
	<-p.exited
}

// restartLocked starts the server on its existing port, retrying while the
// port is still held by someone else.
func (s *Server) restartLocked() {
	s.tb.Helper()
	deadline := time.Now().Add(rebindTimeout)
	for {
		err := s.launchLocked()
		if err == nil {
			return
		}
		if !errors.Is(err, errExited) || time.Now().After(deadline) {
			s.tb.Fatalf("redistest: restart redis-server on %s: %v\n%s", s.addrLocked(), err, s.logTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// launchLocked starts one process on s.port and waits until it answers.
// It returns an error wrapping errExited if the process died on startup,
// which callers treat as a port conflict worth retrying.
func (s *Server) launchLocked() error {
	logFile, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer func() { _ = logFile.Close() }() // the child keeps its own descriptor
	fmt.Fprintf(logFile, "=== redistest: starting redis-server on port %d\n", s.port)

	argv := []string{
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(s.port),
		"--dir", s.dir,
		"--save", "",
		"--appendonly", "no",
		"--protected-mode", "no",
		"--daemonize", "no",
		"--logfile", "",
	}
	if s.bus != 0 {
		argv = append(argv, "--cluster-port", strconv.Itoa(s.bus))
	}
	argv = append(argv, s.args...)
	cmd := exec.Command(s.bin, argv...)
	cmd.Dir = s.dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", s.bin, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()

	if err := waitReady(s.addrLocked(), cmd.Process.Pid, p.exited); err != nil {
		_ = cmd.Process.Kill()
		<-p.exited
		return err
	}
	s.proc = p
	return nil
}

// logTail returns the end of the server log for failure messages.
func (s *Server) logTail() string {
	data, err := os.ReadFile(s.logPath)
	if err != nil {
		return fmt.Sprintf("(no redis-server log: %v)", err)
	}
	if len(data) > logTailBytes {
		data = data[len(data)-logTailBytes:]
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		}
	}
	return "redis-server log tail (" + s.logPath + "):\n" + string(data)
}
