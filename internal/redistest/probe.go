package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// waitReady polls addr until the redis-server with the given PID answers
// PING. Checking the PID guards against a foreign server that grabbed the
// port first: ours then exits, and the foreign one must not be mistaken for it.
func waitReady(addr string, pid int, exited <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	var lastErr error
	for {
		select {
		case <-exited:
			return fmt.Errorf("%w (last probe error: %v)", errExited, lastErr)
		default:
		}
		got, err := probe(addr)
		switch {
		case err != nil:
			lastErr = err
		case got != pid:
			lastErr = fmt.Errorf("port answered by process %d, not %d", got, pid)
		default:
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("redis-server pid %d did not answer PING on %s within %v: %v", pid, addr, readyTimeout, lastErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// probe sends PING and INFO server over a raw RESP connection and returns
// the process_id reported by the server.
func probe(addr string) (int, error) {
	conn, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return 0, err
	}
	defer func() { _ = conn.Close() }()
	if err := conn.SetDeadline(time.Now().Add(time.Second)); err != nil {
		return 0, err
	}
	if _, err := io.WriteString(conn, "*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"); err != nil {
		return 0, err
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if line != "+PONG\r\n" {
		return 0, fmt.Errorf("unexpected PING reply %q", strings.TrimSpace(line))
	}
	line, err = r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if !strings.HasPrefix(line, "$") {
		return 0, fmt.Errorf("unexpected INFO reply %q", strings.TrimSpace(line))
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad INFO length %q", strings.TrimSpace(line))
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, err
	}
	for l := range strings.SplitSeq(string(body), "\r\n") {
		if v, ok := strings.CutPrefix(l, "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("INFO server reply has no process_id")
}
