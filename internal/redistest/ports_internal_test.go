package redistest

import (
	"errors"
	"syscall"
	"testing"
)

// TestKilledServersPortStaysReserved: after Kill, the port of a test's
// server is not free for another test (in this process or another) until
// the test ends; then it is.
func TestKilledServersPortStaysReserved(t *testing.T) {
	var port int
	t.Run("owner", func(t *testing.T) {
		s := Start(t)
		port = s.Port()
		s.Kill()
		f, err := reserve(port)
		if err == nil {
			_ = f.Close()
			t.Fatalf("port %d of a killed server was free to reserve while its test runs", port)
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			t.Fatalf("reserve(%d) = %v, want EWOULDBLOCK", port, err)
		}
	})
	f, err := reserve(port)
	if err != nil {
		t.Fatalf("reserve(%d) after its test ended = %v, want the port free", port, err)
	}
	_ = f.Close()
}
