package main

import "testing"

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

func TestStdlibVersion(t *testing.T) {
	tests := []struct{ in, want string }{
		{"go1.26.8", "v1.26.8"},
		{"go1.26.10 X:boringcrypto", "v1.26.10"},
		{"go1.27rc1", "v1.27.0-rc.1"},
		{"go1.22beta2", "v1.22.0-beta.2"},
		{"go1.20", "v1.20.0"},
		{"devel go1.27-abcdef Mon Dec 7", ""},
		{"", ""},
	}
	for _, tt := range tests {
		if got := stdlibVersion(tt.in); got != tt.want {
			t.Errorf("stdlibVersion(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
