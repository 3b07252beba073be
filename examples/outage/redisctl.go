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
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
)

// redisCtl is the Redis the fleet talks to, and the switch that takes it
// down and brings it back empty.
type redisCtl interface {
	// addr is where the fleet connects. It stays the same across kill and
	// restart.
	addr() string
	// describe says in one line what this Redis is.
	describe() string
	// kill makes Redis unreachable at once, as a crash would.
	kill() error
	// restart brings Redis back on the same address with none of the
	// demo's keys, and returns once it answers.
	restart(ctx context.Context) error
	// close stops whatever the controller started. It is safe after kill.
	close() error
}

// How long a restarted server may take to answer, and how long to retry a
// port that is briefly still taken.
const (
	readyTimeout  = 10 * time.Second
	rebindTimeout = 5 * time.Second
	// restartSeconds is the most a restart can add to the run's timeline.
	restartSeconds = int((readyTimeout+rebindTimeout)/time.Second) + 1
)

// openRedisCtl is newRedisCtl, which a test replaces to slow a restart.
var openRedisCtl = newRedisCtl

// newRedisCtl picks the Redis of the run: a proxy in front of the user's
// Redis when one is named, else a redis-server process of our own, else
// (redis-server missing, or forced) an in-process miniredis.
func newRedisCtl(ctx context.Context, cfg Config) (redisCtl, error) {
	if cfg.RedisAddr != "" {
		return newProxy(ctx, cfg.RedisAddr, []string{textbookPrefix, cacheasidePrefix})
	}
	if !cfg.Miniredis {
		if bin, err := exec.LookPath("redis-server"); err == nil {
			return startRedisServer(ctx, bin)
		}
	}
	return startMiniredis()
}

// redisServer is a redis-server process of our own on a free loopback
// port, without persistence, so that a restart comes back empty.
type redisServer struct {
	bin, dir, version string
	port              int
	hold              *os.File // the port's reservation (reservePort), held until close
	cmd               *exec.Cmd
	exited            chan struct{} // closed once cmd has been reaped
}

func startRedisServer(ctx context.Context, bin string) (*redisServer, error) {
	dir, err := os.MkdirTemp("", "cacheaside-outage-")
	if err != nil {
		return nil, err
	}
	s := &redisServer{bin: bin, dir: dir, version: redisVersion(ctx, bin)}
	for range 5 { // a free port can be taken between probe and bind: retry
		if s.port, s.hold, err = reservePort(); err != nil {
			break
		}
		if err = s.launch(ctx); err == nil {
			return s, nil
		}
		_ = s.hold.Close()
	}
	_ = os.RemoveAll(dir)
	return nil, fmt.Errorf("start redis-server: %w", err)
}

// redisVersion returns the "7.0.15" of redis-server --version, or "".
func redisVersion(ctx context.Context, bin string) string {
	out, _ := exec.CommandContext(ctx, bin, "--version").Output()
	if m := regexp.MustCompile(`v=(\S+)`).FindSubmatch(out); m != nil {
		return string(m[1])
	}
	return ""
}

// launch starts the process and waits until it answers PING.
func (s *redisServer) launch(ctx context.Context) error {
	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no",
		"--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	if err := waitReady(ctx, s.addr(), exited, readyTimeout); err != nil {
		_ = s.kill()
		return err
	}
	return nil
}

func (s *redisServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

func (s *redisServer) describe() string {
	return fmt.Sprintf("redis-server %s (%s) on %s, no persistence; outage = kill -9 of pid %d, restart = a new empty process on the same port",
		s.version, s.bin, s.addr(), s.cmd.Process.Pid)
}

// kill sends SIGKILL to the process we started, by PID, and reaps it.
func (s *redisServer) kill() error {
	if s.cmd == nil {
		return nil
	}
	err := s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
	if errors.Is(err, os.ErrProcessDone) {
		err = nil
	}
	return err
}

func (s *redisServer) restart(ctx context.Context) error {
	if err := s.kill(); err != nil {
		return err
	}
	deadline := time.Now().Add(rebindTimeout)
	for {
		err := s.launch(ctx)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return err
		}
		time.Sleep(50 * time.Millisecond) // the port may still be held
	}
}

func (s *redisServer) close() error {
	err := s.kill()
	if s.hold != nil {
		err = errors.Join(err, s.hold.Close())
	}
	return errors.Join(err, os.RemoveAll(s.dir))
}

// waitReady polls addr with PING until it answers +PONG, the process
// exits, or timeout passes. Only a PING sent after the timeout can end
// the wait with an error: on a busy machine the polling goroutine can be
// held off the CPU for longer than the timeout between two PINGs (whole
// seconds passed with no request of a run answered), and a server that
// started meanwhile then answers the next one.
func waitReady(ctx context.Context, addr string, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for tries := 1; ; tries++ {
		late := time.Now().After(deadline)
		err := ping(addr)
		if err == nil {
			return nil
		}
		if late {
			select {
			case <-exited:
				return errors.New("redis-server exited before answering PING (port taken?)")
			default:
			}
			return fmt.Errorf("redis at %s did not answer PING within %v (%d tries, the last: %w)", addr, timeout, tries, err)
		}
		select {
		case <-exited:
			return errors.New("redis-server exited before answering PING (port taken?)")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// ping sends one inline PING on a short-lived connection.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// miniRedis is the fallback when redis-server is not installed: an
// in-process miniredis that is closed for the outage and replaced by a new,
// empty one on the same address.
type miniRedis struct {
	mr      *miniredis.Miniredis // nil while down
	address string
}

func startMiniredis() (*miniRedis, error) {
	mr, err := miniredis.Run()
	if err != nil {
		return nil, fmt.Errorf("start miniredis: %w", err)
	}
	return &miniRedis{mr: mr, address: mr.Addr()}, nil
}

func (m *miniRedis) addr() string { return m.address }

func (m *miniRedis) describe() string {
	return "in-process miniredis on " + m.address + " (redis-server not used); outage = Close, restart = a new empty miniredis on the same address"
}

func (m *miniRedis) kill() error {
	if m.mr != nil {
		m.mr.Close()
		m.mr = nil
	}
	return nil
}

func (m *miniRedis) restart(ctx context.Context) error {
	_ = m.kill()
	deadline := time.Now().Add(rebindTimeout)
	for {
		mr := miniredis.NewMiniRedis()
		err := mr.StartAddr(m.address)
		if err == nil {
			m.mr = mr
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("restart miniredis on %s: %w", m.address, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (m *miniRedis) close() error { return m.kill() }
