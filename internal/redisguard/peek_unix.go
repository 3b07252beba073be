//go:build linux || darwin || dragonfly || freebsd || netbsd || openbsd || solaris || illumos

package redisguard

import "syscall"

// peek reports whether bytes wait unread in sc's socket, without taking
// them and without blocking. It runs through RawConn.Control, which,
// unlike RawConn.Read, neither waits for the read lock of a goroutine
// blocked reading the socket nor fails once a read deadline has passed.
func peek(sc syscall.Conn) bool {
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	waiting := false
	_ = rc.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		waiting = n > 0 && err == nil
	})
	return waiting // false on a closed connection: Control fails
}
