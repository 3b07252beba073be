package redistest

import (
	"net"
	"sync"
	"testing"
)

// TestClusterNodeLosesItsBusPort: a cluster node whose bus port, picked
// free, is taken before it binds it (another test process took it: two
// test suites at once) starts on the next attempt with another bus port.
// The bus port was once picked once per node, and every attempt then
// failed on it ("Failed listening on port 36833 (cluster), aborting").
func TestClusterNodeLosesItsBusPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	var mu sync.Mutex
	calls := 0
	pickPort = func(tb testing.TB) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 2 { // the first node's first bus port
			return taken.Addr().(*net.TCPAddr).Port, nil
		}
		return freePort(tb)
	}
	t.Cleanup(func() { pickPort = freePort })
	c := StartCluster(t)
	if n := len(c.Addrs()); n != clusterSize {
		t.Fatalf("StartCluster: %d nodes, want %d", n, clusterSize)
	}
}
