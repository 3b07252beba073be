package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestCompareSemver(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"v1.2.3", "1.2.3", 0},
		{"v1.2.3", "v1.2.4", -1},
		{"v1.10.0", "v1.9.9", 1},
		{"v1.20.5", "1.20.2", 1},
		{"v2.0.0+incompatible", "2.0.0", 0},
		{"v1.0.0-rc.1", "v1.0.0", -1},
		{"v1.0.0-alpha", "v1.0.0-alpha.1", -1},
		{"v1.0.0-alpha.2", "v1.0.0-alpha.10", -1},
		{"v1.0.0-1", "v1.0.0-alpha", -1},
		{"v0.0.0-20141024135613-dd632973f1e7", "v0.0.0-20240606120523-5a60cdf6a761", -1},
		{"v0.0.0-20141024135613-dd632973f1e7", "0.0.1", -1},
		{"v1.26.8", "1.26.10", -1},
	}
	for _, tt := range tests {
		if got := compareSemver(tt.a, tt.b); got != tt.want {
			t.Errorf("compareSemver(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
		if got := compareSemver(tt.b, tt.a); got != -tt.want {
			t.Errorf("compareSemver(%q, %q) = %d, want %d", tt.b, tt.a, got, -tt.want)
		}
	}
}

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

func TestDecodeGoMod(t *testing.T) {
	data := []byte(`{"Module":{"Path":"example.com/me"},
		"Require":[{"Path":"example.com/a","Version":"v1.0.0"},{"Path":"example.com/b","Version":"v1.0.0"},{"Path":"example.com/c","Version":"v1.0.0"}],
		"Replace":[{"Old":{"Path":"example.com/b"},"New":{"Path":"example.com/fork","Version":"v1.1.0"}},{"Old":{"Path":"example.com/c","Version":"v1.0.0"},"New":{"Path":"../c"}}]}`)
	m, err := decodeGoMod("me", data)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, v := range m.requires {
		got = append(got, v.String())
	}
	want := "example.com/a@v1.0.0 example.com/fork@v1.1.0"
	if m.path != "example.com/me" || strings.Join(got, " ") != want {
		t.Errorf("decodeGoMod = %s %v, want example.com/me [%s]", m.path, got, want)
	}
}

func TestReport(t *testing.T) {
	mods := []module{{path: "example.com/me", dir: "me", requires: []version{{"example.com/m", "v1.2.4"}}}, {path: "example.com/ok", dir: "ok"}}
	findings := []finding{
		{"example.com/me", version{"example.com/m", "v1.2.4"}, "GO-1", "two ranges", "v1.2.5"},
	}
	std := []finding{{"go", version{"stdlib", "v1.26.8"}, "GO-9", "std", "v1.26.10"}, {"go", version{"stdlib", "v1.26.8"}, "GO-8", "std", "v1.26.9"}}
	var b bytes.Buffer
	if !report(&b, mods, findings, std) {
		t.Errorf("report = false, want true (an advisory with a fixed release applies)")
	}
	for _, want := range []string{
		"FAIL  me: requires example.com/m@v1.2.4: GO-1 (two ranges) is fixed in v1.2.5",
		"ok    ok: 0 module versions required",
		"2 advisories (GO-8, GO-9); Go 1.26.10 fixes them",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report printed\n%s\nwant a line with %q", b.String(), want)
		}
	}
	b.Reset()
	if report(&b, mods[1:], nil, std) {
		t.Errorf("report with standard-library findings only = true, want false")
	}
}
