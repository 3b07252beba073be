package redistest

import (
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
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// masterName is the name the sentinels monitor the primary under.
	masterName = "mymaster"
	// sentinelCount is the number of sentinels; the quorum is 2.
	sentinelCount = 3
	// sentinelReadyTimeout bounds how long the setup may take until the
	// replica is in sync and every sentinel knows the replica and the other
	// sentinels.
	sentinelReadyTimeout = 30 * time.Second
)

// Sentinel is a Redis Sentinel setup owned by one test: one primary, one
// replica and three sentinels monitoring the primary as "mymaster" with a
// quorum of 2, down-after 1s and failover timeout 5s. Every process is
// killed when the test finishes.
type Sentinel struct {
	tb        testing.TB
	data      []*Server // the initial primary and replica
	sentinels []*sentinelProc
}

// sentinelProc is one redis-server --sentinel process.
type sentinelProc struct {
	port    int
	logPath string

	mu   sync.Mutex
	proc *process
}

// StartSentinel starts the primary, the replica (--replicaof the primary)
// and three sentinels, and waits until the replica is in sync and each
// sentinel sees the replica and the two other sentinels. It fails the test
// if anything does not come up.
func StartSentinel(tb testing.TB) *Sentinel {
	tb.Helper()
	s := &Sentinel{tb: tb}
	primary := Start(tb)
	replica := Start(tb, "--replicaof", "127.0.0.1", strconv.Itoa(primary.Port()))
	s.data = []*Server{primary, replica}

	ctx, cancel := context.WithTimeout(context.Background(), sentinelReadyTimeout)
	defer cancel()
	s.waitFor(ctx, "replica in sync", func() (bool, string) {
		info, err := nodeCmd(ctx, replica.Addr(), "INFO", "replication")
		if err != nil {
			return false, err.Error()
		}
		return strings.Contains(info, "master_link_status:up"), info
	})

	bin := serverBin(tb)
	for range sentinelCount {
		s.sentinels = append(s.sentinels, startSentinelProc(tb, bin, primary.Port()))
	}
	// A failover that does not come shows why only in the sentinels'
	// logs (a TILT after a stall of the process over 2s, an election
	// lost and retried after twice the failover timeout): a test that
	// failed logs them, before they and their directories go.
	tb.Cleanup(func() {
		if tb.Failed() {
			for _, sp := range s.sentinels {
				data, _ := os.ReadFile(sp.logPath)
				tb.Logf("redistest: sentinel %s log:\n%s", sp.addr(), data)
			}
		}
	})
	for _, sp := range s.sentinels {
		addr := sp.addr()
		s.waitFor(ctx, "sentinel "+addr+" sees replica and peers", func() (bool, string) {
			out, err := sentinelMaster(ctx, addr)
			if err != nil {
				return false, err.Error()
			}
			return out["num-slaves"] == "1" && out["num-other-sentinels"] == strconv.Itoa(sentinelCount-1), fmt.Sprint(out)
		})
	}
	return s
}

func startSentinelProc(tb testing.TB, bin string, primaryPort int) *sentinelProc {
	tb.Helper()
	var lastErr error
	for range freshPortAttempts {
		dir := tb.TempDir()
		port, err := freePort(tb)
		if err != nil {
			tb.Fatalf("redistest: pick a free port: %v", err)
		}
		sp := &sentinelProc{port: port, logPath: filepath.Join(dir, "sentinel.log")}
		conf := filepath.Join(dir, "sentinel.conf")
		text := strings.Join([]string{
			"bind 127.0.0.1",
			"port " + strconv.Itoa(port),
			"dir " + dir,
			"protected-mode no",
			"daemonize no",
			"sentinel resolve-hostnames no",
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2", masterName, primaryPort),
			"sentinel down-after-milliseconds " + masterName + " 1000",
			"sentinel failover-timeout " + masterName + " 5000",
			"",
		}, "\n")
		if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
			tb.Fatalf("redistest: write sentinel config: %v", err)
		}
		if lastErr = sp.launch(bin, conf, dir); lastErr == nil {
			tb.Cleanup(sp.kill)
			return sp
		}
		if !errors.Is(lastErr, errExited) {
			break
		}
	}
	tb.Fatalf("redistest: start redis-sentinel: %v", lastErr)
	return nil
}

func (sp *sentinelProc) addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sp.port))
}

func (sp *sentinelProc) launch(bin, conf, dir string) error {
	logFile, err := os.OpenFile(sp.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer func() { _ = logFile.Close() }()
	cmd := exec.Command(bin, conf, "--sentinel")
	cmd.Dir = dir
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("run %s: %w", bin, err)
	}
	p := &process{cmd: cmd, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.exited)
	}()
	if err := waitReady(sp.addr(), cmd.Process.Pid, p.exited); err != nil {
		_ = cmd.Process.Kill()
		<-p.exited
		data, _ := os.ReadFile(sp.logPath)
		return fmt.Errorf("%w\nsentinel log:\n%s", err, data)
	}
	sp.mu.Lock()
	sp.proc = p
	sp.mu.Unlock()
	return nil
}

func (sp *sentinelProc) kill() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.proc == nil {
		return
	}
	_ = sp.proc.cmd.Process.Kill()
	<-sp.proc.exited
	sp.proc = nil
}

// waitFor polls cond every 50ms until it holds or ctx ends.
func (s *Sentinel) waitFor(ctx context.Context, what string, cond func() (bool, string)) {
	s.tb.Helper()
	var last string
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		select {
		case <-ctx.Done():
			s.tb.Fatalf("redistest: timed out waiting for %s: %v; last state: %s", what, ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// sentinelMaster returns the SENTINEL MASTER fields as a map.
func sentinelMaster(ctx context.Context, addr string) (map[string]string, error) {
	sc := redis.NewSentinelClient(&redis.Options{Addr: addr, PoolSize: 1, MaxRetries: -1})
	defer func() { _ = sc.Close() }()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return sc.Master(ctx, masterName).Result()
}

// SentinelAddrs returns the addresses of the three sentinels.
func (s *Sentinel) SentinelAddrs() []string {
	addrs := make([]string, len(s.sentinels))
	for i, sp := range s.sentinels {
		addrs[i] = sp.addr()
	}
	return addrs
}

// MasterName returns the name the sentinels monitor the primary under.
func (s *Sentinel) MasterName() string { return masterName }

// Servers returns the two data servers, the initial primary first.
func (s *Sentinel) Servers() []*Server { return append([]*Server(nil), s.data...) }

// Client returns a failover client (redis.NewFailoverClient) for the
// master, with go-redis default options apart from MasterName and
// SentinelAddrs, closed when tb finishes.
func (s *Sentinel) Client(tb testing.TB) *redis.Client {
	tb.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: masterName, SentinelAddrs: s.SentinelAddrs()})
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

// Primary returns the data server the sentinels currently report as primary.
func (s *Sentinel) Primary() *Server {
	s.tb.Helper()
	for _, sp := range s.sentinels {
		sc := redis.NewSentinelClient(&redis.Options{Addr: sp.addr(), PoolSize: 1, MaxRetries: -1})
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		hp, err := sc.GetMasterAddrByName(ctx, masterName).Result()
		cancel()
		_ = sc.Close()
		if err != nil || len(hp) != 2 {
			continue
		}
		addr := net.JoinHostPort(hp[0], hp[1])
		for _, d := range s.data {
			if d.Addr() == addr {
				return d
			}
		}
		s.tb.Fatalf("redistest: sentinel reports unknown primary %s", addr)
	}
	s.tb.Fatalf("redistest: no sentinel reported the primary of %s", masterName)
	return nil
}

// WaitReplicated waits until the replica has processed every write the
// primary had acknowledged when WaitReplicated was called, so that it has
// all of it if promoted. It fails the test after 10s.
func (s *Sentinel) WaitReplicated() {
	s.tb.Helper()
	WaitReplicated(s.tb, s.data...)
}

// Replica returns the data server that is not the current primary.
func (s *Sentinel) Replica() *Server {
	s.tb.Helper()
	p := s.Primary()
	for _, d := range s.data {
		if d != p {
			return d
		}
	}
	return nil
}

// KillPrimary kills (SIGKILL) the current primary and returns it. The
// sentinels promote the replica once the primary has been down for 1s and
// a quorum agrees.
func (s *Sentinel) KillPrimary() *Server {
	s.tb.Helper()
	p := s.Primary()
	p.Kill()
	return p
}
