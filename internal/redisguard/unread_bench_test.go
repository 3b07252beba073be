package redisguard

import (
	"fmt"
	"io"
	"net"
	"testing"
)

// BenchmarkConnRoundTrip measures what the guard's connection wrapper
// (unread.go) adds to a request and its reply: a 32-byte write and a
// 32-byte read over loopback TCP to an echo peer, on the plain connection
// and on the wrapped one. Compare the two with benchstat.
func BenchmarkConnRoundTrip(b *testing.B) {
	for _, wrapped := range []bool{false, true} {
		name := "conn=plain"
		if wrapped {
			name = "conn=wrapped"
		}
		b.Run(name, func(b *testing.B) {
			a, peer := tcpPair(b)
			go func() { _, _ = io.Copy(peer, peer) }()
			var c net.Conn = a
			if wrapped {
				c = (&conns{}).wrap(a)
			}
			req, rep := make([]byte, 32), make([]byte, 32)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, rep); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// nopConn is a connection whose reads and writes return at once.
type nopConn struct{ net.Conn }

func (nopConn) Read(p []byte) (int, error)  { return len(p), nil }
func (nopConn) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkConnWrapperCost isolates the wrapper's own work per request
// and reply (a write and a read on a connection that does nothing).
func BenchmarkConnWrapperCost(b *testing.B) {
	for _, layers := range []int{0, 1, 2} {
		b.Run(fmt.Sprintf("layers=%d", layers), func(b *testing.B) {
			var c net.Conn = nopConn{}
			for range layers {
				c = (&conns{}).wrap(c)
			}
			p := make([]byte, 32)
			b.ReportAllocs()
			for b.Loop() {
				_, _ = c.Write(p)
				_, _ = c.Read(p)
			}
		})
	}
}
