package protocol

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func TestValueKey(t *testing.T) {
	tests := []struct {
		prefix, s, want string
	}{
		{"ca:", "42", "ca:{42}"},
		{"", "42", "{42}"},
		{"app:v2:", "user:7", "app:v2:{user:7}"},
		{"ca:", "ключ", "ca:{ключ}"},
		{"ca:", "{", "ca:{{}"},
		{"ca:", "a{b", "ca:{a{b}"},
		{"ca:", "{{", "ca:{{{}"},
		{"ca:", "#", "ca:{#" + sha256Hex("#") + "}"},
		{"ca:", " ", "ca:{ }"},
		{"ca:", "", "ca:{#" + sha256Hex("") + "}"},
		{"", "", "{#" + sha256Hex("") + "}"},
		{"ca:", "}", "ca:{#" + sha256Hex("}") + "}"},
		{"ca:", "a}b", "ca:{#" + sha256Hex("a}b") + "}"},
		{"ca:", "{}", "ca:{#" + sha256Hex("{}") + "}"},
		{"ca:", "}{", "ca:{#" + sha256Hex("}{") + "}"},
		{"", "a{b}c", "{#" + sha256Hex("a{b}c") + "}"},
	}
	for _, tt := range tests {
		if got := ValueKey(tt.prefix, tt.s); got != tt.want {
			t.Errorf("ValueKey(%q, %q) = %q, want %q", tt.prefix, tt.s, got, tt.want)
		}
	}
}

func TestKeysFor(t *testing.T) {
	for _, vkey := range []string{"ca:{42}", "{x}", "ca:{#" + sha256Hex("") + "}"} {
		got := KeysFor(vkey)
		want := Keys{vkey, vkey + ":lock", vkey + ":gen"}
		if len(got) != len(want) {
			t.Fatalf("KeysFor(%q) = %q, want %q", vkey, got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("KeysFor(%q)[%d] = %q, want %q", vkey, i, got[i], want[i])
			}
		}
	}
}

// clusterHashTag returns the part of key that Redis Cluster hashes to pick
// a slot: the substring between the first '{' and the first '}' after it,
// if that substring is non-empty; otherwise the whole key.
func clusterHashTag(key string) string {
	open := strings.IndexByte(key, '{')
	if open < 0 {
		return key
	}
	end := strings.IndexByte(key[open+1:], '}')
	if end <= 0 { // no '}' after the '{', or "{}"
		return key
	}
	return key[open+1 : open+1+end]
}

func TestKeysClusterHashTagRule(t *testing.T) {
	// The examples of the Redis Cluster specification, so that the
	// helper the next test relies on is itself right.
	tests := []struct{ key, want string }{
		{"{user1000}.following", "user1000"},
		{"foo{}{bar}", "foo{}{bar}"},
		{"foo{{bar}}zap", "{bar"},
		{"foo{bar}{zap}", "bar"},
		{"nobraces", "nobraces"},
		{"}{", "}{"},
		{"{", "{"},
	}
	for _, tt := range tests {
		if got := clusterHashTag(tt.key); got != tt.want {
			t.Errorf("clusterHashTag(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}
}

// trickyKeys are encoded keys that stress the hash-tag layout.
var trickyKeys = []string{
	"", "}", "{", "{}", "}{", "a}b", "a{b", "a{b}c", "{{", "}}", "{a}", "{}{}",
	"#", "#" + sha256Hex(""), ":lock", "x:gen", " ", "\x00", "\xff\xfe",
	"ключ", "日本語{キー}", "emoji 🙂}", "42", "-9223372036854775808",
	strings.Repeat("k", 10_000), strings.Repeat("}{", 5_000), strings.Repeat("{", 1000) + "x",
}

// All three keys of one cache key must land in one Redis Cluster slot, or
// the scripts that touch them together fail with CROSSSLOT.
func TestKeysShareClusterHashTag(t *testing.T) {
	for _, prefix := range []string{"", "ca:", "app:v2:"} {
		for _, s := range trickyKeys {
			ks := KeysFor(ValueKey(prefix, s))
			tag := clusterHashTag(ks[0])
			if tag == ks[0] {
				t.Errorf("ValueKey(%q, %q) = %q has no hash tag, want one", prefix, short(s), short(ks[0]))
			}
			for _, k := range ks[1:] {
				if got := clusterHashTag(k); got != tag {
					t.Errorf("clusterHashTag(%q) = %q, want %q, the tag of the value key %q", short(k), short(got), short(tag), short(ks[0]))
				}
			}
			// The tag is s itself when s fits in braces and cannot be taken
			// for a hashed tag, else "#" + SHA-256.
			want := s
			if s == "" || strings.HasPrefix(s, "#") || strings.Contains(s, "}") {
				want = "#" + sha256Hex(s)
			}
			if tag != want {
				t.Errorf("clusterHashTag(ValueKey(%q, %q)) = %q, want %q", prefix, short(s), short(tag), short(want))
			}
		}
	}
}

// Distinct encoded keys must map to distinct Redis keys, or one key's
// cached value is served for another. The hashed form "#<sha256 hex>" is
// also a string a key can encode to, so it must not be reachable verbatim.
func TestValueKeyDistinct(t *testing.T) {
	inputs := append([]string{
		"#" + sha256Hex("}"),
		"#" + sha256Hex("a}b"),
		"#" + strings.ToUpper(sha256Hex("")),
	}, trickyKeys...)
	for _, prefix := range []string{"", "ca:"} {
		seen := make(map[string]string)
		for _, s := range inputs {
			vk := ValueKey(prefix, s)
			if other, dup := seen[vk]; dup && other != s {
				t.Errorf("ValueKey(%q, %q) = ValueKey(%q, %q) = %q, want distinct keys for distinct inputs",
					prefix, short(s), prefix, short(other), short(vk))
			}
			seen[vk] = s
		}
	}
}

// short trims long strings for failure messages.
func short(s string) string {
	if len(s) <= 80 {
		return s
	}
	return s[:77] + "..."
}
