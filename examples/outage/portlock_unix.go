//go:build unix

package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// reservePort returns a loopback TCP port that was free a moment ago and
// reserves it until hold is closed, so that while the demo's Redis is
// down no other program of this repository (its tests start many
// servers, and CI runs them beside the demo) starts a server on it: the
// demo would take that server for its own restarted one. The reservation
// is an exclusive flock on a file named for the port, the one
// internal/redistest takes too; programs that do not take it are not held
// off.
func reservePort() (port int, hold *os.File, err error) {
	dir := filepath.Join(os.TempDir(), "cacheaside-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return 0, nil, err
	}
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, nil, err
		}
		port = ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_RDWR|os.O_CREATE, 0o666)
		if err != nil {
			return 0, nil, err
		}
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return port, f, nil
		}
		_ = f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return 0, nil, err
		}
	}
	return 0, nil, errors.New("100 free ports in a row were reserved by other programs")
}
