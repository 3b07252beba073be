package redistest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// ServerEnv is the environment variable that chooses the server the tests
// run against: the path of a redis-server or valkey-server binary, or a
// name to look up in PATH. Default: redis-server from PATH.
//
//	CACHEASIDE_TEST_SERVER=$HOME/.cache/valkey-8.0.1/src/valkey-server go test -race .
//
// The matching command-line client (valkey-cli or redis-cli), used to
// create Clusters, is looked up beside that binary first, then in PATH.
// Sentinels run as the same binary with --sentinel.
const ServerEnv = "CACHEASIDE_TEST_SERVER"

// defaultServer is the binary used when ServerEnv is unset or empty.
const defaultServer = "redis-server"

// Binary describes the server binary the tests run against.
type Binary struct {
	// Path is the absolute path of the server binary.
	Path string
	// Name is "valkey" or "redis", from the binary's --version line.
	Name string
	// Version is the server's own version, e.g. "8.0.1" or "7.0.15".
	Version string
}

// String returns e.g. "valkey 8.0.1 (/root/.cache/valkey-8.0.1/src/valkey-server)".
func (b Binary) String() string { return b.Name + " " + b.Version + " (" + b.Path + ")" }

// IsValkey reports whether the tests run against Valkey.
func (b Binary) IsValkey() bool { return b.Name == "valkey" }

var (
	versionsMu sync.Mutex
	// versions caches each binary's version by path: asking costs a
	// process start, and a test binary starts dozens of servers.
	versions = map[string]Binary{}
	// logged guards the one log line naming the server of a test binary.
	logged sync.Once
)

// ServerBinary returns the server binary chosen by ServerEnv, or an error saying
// what to install or set.
func ServerBinary() (Binary, error) {
	env := os.Getenv(ServerEnv)
	name := env
	if name == "" {
		name = defaultServer
	}
	path, err := exec.LookPath(name)
	if err != nil {
		if env == "" {
			return Binary{}, fmt.Errorf("redis-server not found in PATH: install it with `apt-get install redis-server` (Redis 7+), or set %s to the path of a redis-server or valkey-server: %w", ServerEnv, err)
		}
		return Binary{}, fmt.Errorf("%s=%q: no such executable: %w", ServerEnv, env, err)
	}
	if path, err = filepath.Abs(path); err != nil {
		return Binary{}, err
	}
	versionsMu.Lock()
	defer versionsMu.Unlock()
	if b, ok := versions[path]; ok {
		return b, nil
	}
	out, err := exec.Command(path, "--version").CombinedOutput()
	if err != nil {
		return Binary{}, fmt.Errorf("%s --version: %v: %s", path, err, out)
	}
	b, err := parseVersion(string(out))
	if err != nil {
		return Binary{}, fmt.Errorf("%s --version: %w", path, err)
	}
	b.Path = path
	versions[path] = b
	return b, nil
}

// parseVersion reads the first line of `redis-server --version` or
// `valkey-server --version`: "Redis server v=7.0.15 sha=…" or
// "Valkey server v=8.0.1 sha=…".
func parseVersion(out string) (Binary, error) {
	line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	f := strings.Fields(line)
	if len(f) < 3 || f[1] != "server" || !strings.HasPrefix(f[2], "v=") {
		return Binary{}, fmt.Errorf("unexpected version line %q", line)
	}
	name := strings.ToLower(f[0])
	if name != "redis" && name != "valkey" {
		return Binary{}, fmt.Errorf("unknown server %q in version line %q", f[0], line)
	}
	return Binary{Name: name, Version: strings.TrimPrefix(f[2], "v=")}, nil
}

// serverBin returns the server binary's path, failing tb if there is none,
// and logs once per test binary which server the tests run against.
func serverBin(tb testing.TB) string {
	tb.Helper()
	b, err := ServerBinary()
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	logged.Do(func() { tb.Logf("redistest: tests run against %s", b) })
	return b.Path
}

// cliBin returns the command-line client that goes with the server:
// <name>-cli beside the server binary, then redis-cli beside it (a Valkey
// build installs both names), then the same two in PATH.
func cliBin(tb testing.TB) string {
	tb.Helper()
	b, err := ServerBinary()
	if err != nil {
		tb.Fatalf("redistest: %v", err)
	}
	names := []string{b.Name + "-cli"}
	if b.Name != "redis" {
		names = append(names, "redis-cli")
	}
	for _, n := range names {
		if p := filepath.Join(filepath.Dir(b.Path), n); isExecutable(p) {
			return p
		}
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	tb.Fatalf("redistest: %s not found beside %s nor in PATH: install it (Debian: `apt-get install redis-tools` for redis-cli; a Valkey build has valkey-cli in its src directory)", strings.Join(names, " or "), b.Path)
	return ""
}

func isExecutable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}
