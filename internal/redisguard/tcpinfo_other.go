//go:build !linux

package redisguard

import "net"

// tcpReceived reports that the kernel's count of received bytes is not
// known here: the guard peeks at the socket instead (unread.go).
func tcpReceived(*net.TCPConn) (uint64, bool) { return 0, false }
