package main

import (
	"bufio"
	"context"
	"net"
	"sync"
	"testing"
	"time"
)

// TestWaitReadyPingsAgainAfterAStall: on a loaded machine the one goroutine
// polling the restarted Redis can be held off the CPU longer than the
// ready timeout, between a PING that failed (the server was still
// starting) and the next. waitReady then gave up without asking again:
// "restart redis: redis at 127.0.0.1:42229 did not answer PING within 10s",
// 1 of 17 runs under 6 busy loops and three copies at once, where whole
// seconds passed with no request of the run answered. Here the first PING
// takes longer than the timeout to fail (the server closes it unanswered),
// as a stall would make it; the server answers every later one at once.
func TestWaitReadyPingsAgainAfterAStall(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const timeout = 200 * time.Millisecond
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Go(func() {
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				if n == 0 {
					time.Sleep(timeout + 100*time.Millisecond)
					return
				}
				if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
					_, _ = c.Write([]byte("+PONG\r\n"))
				}
			})
		}
	})
	never := make(chan struct{})
	if err := waitReady(context.Background(), ln.Addr().String(), never, timeout); err != nil {
		t.Errorf("waitReady, a server that answers every PING after the first = %v, want nil", err)
	}
}
