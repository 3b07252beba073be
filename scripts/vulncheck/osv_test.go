package main

import (
	"strings"
	"testing"
)

// The advisory of this stream has two ranges for one module, as the Go
// vulnerability database writes a fix backported to an older minor release.
const stream = `{"config":{"scanner_name":"govulncheck"}}
{"progress":{"message":"Looking up vulnerabilities"}}
{"osv":{"id":"GO-1","summary":"two ranges","affected":[{"package":{"name":"example.com/m"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.2.5"},{"introduced":"1.3.0"},{"fixed":"1.3.2"}]}]}]}}
{"osv":{"id":"GO-2","summary":"open","affected":[{"package":{"name":"example.com/m"},"ranges":[{"type":"SEMVER","events":[{"introduced":"1.3.1"}]}]}]}}
{"osv":{"id":"GO-3","summary":"withdrawn","withdrawn":"2026-01-01T00:00:00Z","affected":[{"package":{"name":"example.com/m"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"}]}]}]}}
`

func TestAffects(t *testing.T) {
	entries, err := decodeEntries(strings.NewReader(stream))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 {
		t.Fatalf("decodeEntries = %d entries, want 2 (the withdrawn one left out)", len(entries))
	}
	tests := []struct {
		v            version
		entry        int
		wantFixed    string
		wantAffected bool
	}{
		{version{"example.com/m", "v1.2.4"}, 0, "v1.2.5", true},
		{version{"example.com/m", "v1.2.5"}, 0, "", false},
		{version{"example.com/m", "v1.2.9"}, 0, "", false},
		{version{"example.com/m", "v1.3.0"}, 0, "v1.3.2", true},
		{version{"example.com/m", "v1.3.1"}, 0, "v1.3.2", true},
		{version{"example.com/m", "v1.3.2"}, 0, "", false},
		{version{"example.com/other", "v1.0.0"}, 0, "", false},
		{version{"example.com/m", "v1.3.0"}, 1, "", false},
		{version{"example.com/m", "v1.4.0"}, 1, "", true},
	}
	for _, tt := range tests {
		fixed, ok := affects(entries[tt.entry], tt.v)
		if fixed != tt.wantFixed || ok != tt.wantAffected {
			t.Errorf("affects(%s, %s) = %q, %v, want %q, %v", entries[tt.entry].ID, tt.v, fixed, ok, tt.wantFixed, tt.wantAffected)
		}
	}
}
