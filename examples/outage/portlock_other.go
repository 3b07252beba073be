//go:build !unix

package main

import (
	"net"
	"os"
)

// reservePort returns a loopback TCP port that was free a moment ago. Off
// Unix there is no flock: the port is not reserved (see portlock_unix.go),
// and hold is nil.
func reservePort() (port int, hold *os.File, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, nil, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil, nil
}
