package redisguard

import (
	"net"

	"golang.org/x/sys/unix"
)

// tcpReceived returns the bytes c's socket has received, by the kernel's
// count (TCP_INFO's tcpi_bytes_received, Linux 4.1 and later); ok is
// false when the kernel does not tell.
func tcpReceived(c *net.TCPConn) (n uint64, ok bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var info *unix.TCPInfo
	if cerr := rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); cerr != nil || err != nil {
		return 0, false
	}
	n = info.Bytes_received
	switch info.State {
	case 6, 8, 9, 11: // TIME_WAIT, CLOSE_WAIT, LAST_ACK, CLOSING: a FIN came, counted as a byte
		n--
	}
	return n, info.Bytes_received > 0
}
