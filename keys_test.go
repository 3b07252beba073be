package cacheaside

import (
	"crypto/sha256"
	"encoding/hex"
	"math"
	"strings"
	"testing"
)

type (
	namedString string
	namedInt64  int64
	namedUint8  uint8
)

// encodeWith builds the default encoder of K and encodes k.
func encodeWith[K comparable](k K) (string, error) {
	enc, err := newKeyEncoder[K](nil)
	if err != nil {
		return "", err
	}
	return enc(k), nil
}

func TestKeyEncoderDefaults(t *testing.T) {
	tests := []struct {
		name string
		key  any // for the failure message
		enc  func() (string, error)
		want string
	}{
		{"string", "user:42", func() (string, error) { return encodeWith("user:42") }, "user:42"},
		{"empty string", "", func() (string, error) { return encodeWith("") }, ""},
		{"unicode string", "ключ}{", func() (string, error) { return encodeWith("ключ}{") }, "ключ}{"},
		{"int", 42, func() (string, error) { return encodeWith(42) }, "42"},
		{"int negative", -7, func() (string, error) { return encodeWith(-7) }, "-7"},
		{"int64 min", int64(math.MinInt64), func() (string, error) { return encodeWith(int64(math.MinInt64)) }, "-9223372036854775808"},
		{"int64 max", int64(math.MaxInt64), func() (string, error) { return encodeWith(int64(math.MaxInt64)) }, "9223372036854775807"},
		{"int32 min", int32(math.MinInt32), func() (string, error) { return encodeWith(int32(math.MinInt32)) }, "-2147483648"},
		{"uint64 max", uint64(math.MaxUint64), func() (string, error) { return encodeWith(uint64(math.MaxUint64)) }, "18446744073709551615"},
		{"uint32 max", uint32(math.MaxUint32), func() (string, error) { return encodeWith(uint32(math.MaxUint32)) }, "4294967295"},
		{"int8", int8(-128), func() (string, error) { return encodeWith(int8(-128)) }, "-128"},
		{"int16", int16(300), func() (string, error) { return encodeWith(int16(300)) }, "300"},
		{"uint", uint(7), func() (string, error) { return encodeWith(uint(7)) }, "7"},
		{"uint8", uint8(255), func() (string, error) { return encodeWith(uint8(255)) }, "255"},
		{"uint16", uint16(65535), func() (string, error) { return encodeWith(uint16(65535)) }, "65535"},
		{"uintptr", uintptr(9), func() (string, error) { return encodeWith(uintptr(9)) }, "9"},
		{"named string", namedString("sku-1"), func() (string, error) { return encodeWith(namedString("sku-1")) }, "sku-1"},
		{"named int64", namedInt64(-12), func() (string, error) { return encodeWith(namedInt64(-12)) }, "-12"},
		{"named int64 max", namedInt64(math.MaxInt64), func() (string, error) { return encodeWith(namedInt64(math.MaxInt64)) }, "9223372036854775807"},
		{"named uint8", namedUint8(200), func() (string, error) { return encodeWith(namedUint8(200)) }, "200"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.enc()
			if err != nil {
				t.Fatalf("encode(%#v) error = %v, want nil", tt.key, err)
			}
			if got != tt.want {
				t.Errorf("encode(%#v) = %q, want %q", tt.key, got, tt.want)
			}
		})
	}
}

func TestKeyEncoderUnsupportedTypes(t *testing.T) {
	tests := []struct {
		name string
		new  func() error
	}{
		{"struct", func() error { _, err := newKeyEncoder[structKey](nil); return err }},
		{"float64", func() error { _, err := newKeyEncoder[float64](nil); return err }},
		{"bool", func() error { _, err := newKeyEncoder[bool](nil); return err }},
		{"pointer", func() error { _, err := newKeyEncoder[*int](nil); return err }},
		{"array", func() error { _, err := newKeyEncoder[[2]int](nil); return err }},
		{"interface", func() error { _, err := newKeyEncoder[any](nil); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.new()
			if err == nil {
				t.Fatalf("newKeyEncoder[%s](nil) error = nil, want an error pointing to WithKeyFunc", tt.name)
			}
			if !strings.Contains(err.Error(), "WithKeyFunc") {
				t.Errorf("newKeyEncoder[%s](nil) error = %q, want it to point to WithKeyFunc", tt.name, err)
			}
		})
	}
}

func TestKeyEncoderCustom(t *testing.T) {
	enc, err := newKeyEncoder[structKey](func(k structKey) string { return k.Tenant + "/" + "x" })
	if err != nil {
		t.Fatalf("newKeyEncoder[structKey](func(structKey) string) error = %v, want nil", err)
	}
	if got, want := enc(structKey{Tenant: "t1"}), "t1/x"; got != want {
		t.Errorf("enc(structKey{t1}) = %q, want %q", got, want)
	}
	// A custom function also overrides the default of a supported type.
	enc64, err := newKeyEncoder[int64](func(k int64) string { return "id" })
	if err != nil {
		t.Fatalf("newKeyEncoder[int64](func(int64) string) error = %v, want nil", err)
	}
	if got, want := enc64(5), "id"; got != want {
		t.Errorf("enc(5) = %q, want %q", got, want)
	}
}

func TestKeyEncoderCustomWrongType(t *testing.T) {
	tests := []struct {
		name string
		new  func() error
	}{
		{"func(int) for int64", func() error { _, err := newKeyEncoder[int64](func(int) string { return "" }); return err }},
		{"func(int64) for named int64", func() error { _, err := newKeyEncoder[namedInt64](func(int64) string { return "" }); return err }},
		{"func(string) for named string", func() error { _, err := newKeyEncoder[namedString](func(string) string { return "" }); return err }},
		{"wrong result type", func() error { _, err := newKeyEncoder[string](func(string) []byte { return nil }); return err }},
		{"not a func", func() error { _, err := newKeyEncoder[string]("nope"); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.new()
			if err == nil {
				t.Fatalf("newKeyEncoder(%s) error = nil, want an error naming WithKeyFunc", tt.name)
			}
			if !strings.Contains(err.Error(), "WithKeyFunc") {
				t.Errorf("newKeyEncoder(%s) error = %q, want it to name WithKeyFunc", tt.name, err)
			}
		})
	}
}

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
		if got := valueKey(tt.prefix, tt.s); got != tt.want {
			t.Errorf("valueKey(%q, %q) = %q, want %q", tt.prefix, tt.s, got, tt.want)
		}
	}
}

func TestKeysFor(t *testing.T) {
	for _, vkey := range []string{"ca:{42}", "{x}", "ca:{#" + sha256Hex("") + "}"} {
		got := keysFor(vkey)
		want := keys{vkey, vkey + ":lock", vkey + ":gen"}
		if len(got) != len(want) {
			t.Fatalf("keysFor(%q) = %q, want %q", vkey, got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Errorf("keysFor(%q)[%d] = %q, want %q", vkey, i, got[i], want[i])
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
			ks := keysFor(valueKey(prefix, s))
			tag := clusterHashTag(ks[0])
			if tag == ks[0] {
				t.Errorf("valueKey(%q, %q) = %q has no hash tag, want one", prefix, short(s), short(ks[0]))
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
				t.Errorf("clusterHashTag(valueKey(%q, %q)) = %q, want %q", prefix, short(s), short(tag), short(want))
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
			vk := valueKey(prefix, s)
			if other, dup := seen[vk]; dup && other != s {
				t.Errorf("valueKey(%q, %q) = valueKey(%q, %q) = %q, want distinct keys for distinct inputs",
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
