package main

import (
	"bytes"
	"strings"
	"testing"
)

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
