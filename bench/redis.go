package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// How long a fresh redis-server may take to answer PING, and how many free
// ports to try when one is taken between the probe and the bind.
const (
	readyTimeout = 10 * time.Second
	portAttempts = 5
)

// errNoRedis is returned when redis-server is not installed.
var errNoRedis = errors.New("redis-server not found in PATH: install it with `apt-get install redis-server` (Redis 7+)")

// server is a redis-server process of our own on a free loopback port,
// without persistence. It is never the shared server on 6379: the port is
// picked by the kernel.
type server struct {
	dir    string
	port   int
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd has been reaped
}

// startServer launches redis-server, with extra arguments if any, and
// returns once it answers PING.
func startServer(ctx context.Context, extra ...string) (*server, error) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, errNoRedis
	}
	dir, err := os.MkdirTemp("", "cacheaside-bench-")
	if err != nil {
		return nil, err
	}
	s := &server{dir: dir}
	for range portAttempts {
		if s.port, err = freePort(); err != nil {
			break
		}
		if err = s.launch(ctx, bin, extra...); err == nil {
			return s, nil
		}
	}
	_ = os.RemoveAll(dir)
	return nil, fmt.Errorf("start redis-server: %w", err)
}

func (s *server) launch(ctx context.Context, bin string, extra ...string) error {
	cmd := exec.Command(bin, append([]string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no",
		"--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log")}, extra...)...)
	// Take redis-server down with us if this process dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		_ = cmd.Wait()
		close(exited)
	}(s.exited)

	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	for {
		if ping(s.addr()) == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("redis-server on port %d exited before answering PING: %s", s.port, s.logTail())
		case <-ctx.Done():
			s.kill()
			return fmt.Errorf("redis-server on port %d: no PING reply: %w", s.port, ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func (s *server) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// kill sends SIGKILL to the process (by PID, also when it is stopped) and
// waits until it has been reaped. It is safe to call more than once.
func (s *server) kill() {
	if s.cmd == nil {
		return
	}
	select {
	case <-s.exited:
	default:
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// freeze stops the process with SIGSTOP: the kernel still accepts
// connections and buffers writes, but nothing is answered.
func (s *server) freeze() error { return s.cmd.Process.Signal(syscall.SIGSTOP) }

// thaw resumes a frozen process.
func (s *server) thaw() error { return s.cmd.Process.Signal(syscall.SIGCONT) }

// close kills the process and removes its directory.
func (s *server) close() error {
	s.kill()
	return os.RemoveAll(s.dir)
}

func (s *server) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	if len(b) > 1024 {
		b = b[len(b)-1024:]
	}
	return strings.TrimSpace(string(b))
}

// ping sends one inline PING and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING: unexpected reply %q", line)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// commandCalls returns, per command name, how many times the server ran
// it since the last CONFIG RESETSTAT.
func commandCalls(ctx context.Context, admin *redis.Client) (map[string]int64, error) {
	info, err := admin.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, err
	}
	calls := map[string]int64{}
	for line := range strings.SplitSeq(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok || !strings.HasPrefix(name, "cmdstat_") {
			continue
		}
		n, _, _ := strings.Cut(rest, ",")
		calls[strings.TrimPrefix(name, "cmdstat_")], _ = strconv.ParseInt(n, 10, 64)
	}
	return calls, nil
}

// redisVersion returns the first line of `redis-server --version`.
func redisVersion(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "redis-server", "--version").Output()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return strings.TrimSpace(string(out))
}
