package redistest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
)

// A port a test's server used must not go to another test's server while
// the test still runs: a test that kills its server and expects its calls
// to fail would reach the other server instead (seen in CI, twelve test
// processes at once: a Get after Kill took the fill lock on a server a
// test in another process had started on the killed one's port). So every
// port this package hands out is reserved, across processes, until the
// test that asked for it ends: an exclusive flock on a file named for the
// port in portsDir. freePort skips a port whose file another test holds.
// Processes that do not use this package can still take a killed server's
// port; none of this project's tests start servers any other way.

// portsDir holds one lock file per reserved port.
var portsDir = filepath.Join(os.TempDir(), "cacheaside-ports")

// reserveAttempts bounds how many reserved ports freePort skips in a row.
const reserveAttempts = 100

// pickPort is freePort; a test replaces it to hand out a taken port.
var pickPort = freePort

// freePort asks the kernel for an unused loopback port and reserves it
// until tb ends. The kernel's port is released before redis-server binds
// it, so callers must cope with losing the race to a process that does
// not reserve ports.
func freePort(tb testing.TB) (int, error) {
	if err := os.MkdirAll(portsDir, 0o777); err != nil {
		return 0, fmt.Errorf("port reservations: %w", err)
	}
	for range reserveAttempts {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		if err := l.Close(); err != nil {
			return 0, err
		}
		f, err := reserve(port)
		if errors.Is(err, syscall.EWOULDBLOCK) {
			continue // another test holds it: its server is, or was, there
		}
		if err != nil {
			return 0, err
		}
		tb.Cleanup(func() { _ = f.Close() }) // closing the file drops the lock
		return port, nil
	}
	return 0, fmt.Errorf("%d ports in a row were reserved by other tests", reserveAttempts)
}

// reserve takes port's lock file, without waiting: EWOULDBLOCK if another
// open file holds it (in this process or another). The lock lasts until
// the returned file is closed, or its process ends.
func reserve(port int) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(portsDir, strconv.Itoa(port)), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return nil, fmt.Errorf("port reservation: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

// Port returns a free loopback port reserved for tb as freePort's are (for
// a second listener of a server, such as its TLS port), or fails tb.
func Port(tb testing.TB) int {
	tb.Helper()
	p, err := freePort(tb)
	if err != nil {
		tb.Fatalf("redistest: no free port: %v", err)
	}
	return p
}
