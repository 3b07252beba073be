package redistest

import "testing"

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		out           string
		name, version string
		ok            bool
	}{
		{"Redis server v=7.0.15 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=ae4d7c971a948f0\n", "redis", "7.0.15", true},
		{"Valkey server v=8.0.1 sha=00000000:0 malloc=jemalloc-5.3.0 bits=64 build=5d5d4a6c1e9d1c2b\n", "valkey", "8.0.1", true},
		{"KeyDB server v=6.3.4 sha=0\n", "", "", false},
		{"redis-server: command not found\n", "", "", false},
		{"", "", "", false},
	} {
		b, err := parseVersion(tc.out)
		if (err == nil) != tc.ok || b.Name != tc.name || b.Version != tc.version {
			t.Errorf("parseVersion(%q) = %+v, %v, want name %q version %q ok %v", tc.out, b, err, tc.name, tc.version, tc.ok)
		}
	}
}
