package l1

import (
	"slices"
	"strings"
	"testing"
)

func TestInvalidationRoundTrip(t *testing.T) {
	for _, keys := range [][]string{
		{"ca:{1}"},
		{"ca:{1}", "ca:{2}", "ca:{3}"},
		{"p\n:{a\nb}", "\n", "", "\x00", "\xff\xfe", "\r\n\r\n", strings.Repeat("k", 300)},
		{},
	} {
		msg := Encode("0123456789abcdef.", keys)
		origin, got, ok := Decode(string(msg))
		if !ok || origin != "0123456789abcdef." || !slices.Equal(got, keys) {
			t.Errorf("Decode(Encode(%q)) = %q, %q, %v; want the origin and keys back", keys, origin, got, ok)
		}
	}
}

func TestDecodeInvalidationRejects(t *testing.T) {
	valid := string(Encode("o.", []string{"ca:{1}"}))
	for name, msg := range map[string]string{
		"empty":                  "",
		"earlier format":         "0123456789abcdef.\nca:{1}\nca:{2}",
		"format only":            format,
		"other version":          "\x00inv2" + valid[len(format):],
		"cut in a key":           valid[:len(valid)-1],
		"length past the end":    format + "\x02o.\x7fca:{1}",
		"length overflows":       format + "\x02o.\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
		"varint cut short":       format + "\x02o.\x80",
		"huge origin length":     format + "\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
		"uvarint longer than 10": format + "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00",
	} {
		if origin, keys, ok := Decode(msg); ok {
			t.Errorf("%s: Decode(%q) = %q, %q, true; want ok false", name, msg, origin, keys)
		}
	}
}

// FuzzDecodeInvalidation: whatever arrives on the channel, decoding never
// panics, keys are substrings of the message, and a message it accepts
// says the same once encoded again.
func FuzzDecodeInvalidation(f *testing.F) {
	f.Add(Encode("0123456789abcdef.", []string{"ca:{1}", "ca:{a\nb}"}))
	f.Add(Encode("", nil))
	f.Add([]byte("0123456789abcdef.\nca:{1}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		msg := string(b)
		origin, keys, ok := Decode(msg)
		if !ok {
			if origin != "" || keys != nil {
				t.Fatalf("Decode(%q) = %q, %q with ok false, want nothing", msg, origin, keys)
			}
			return
		}
		for _, k := range append(keys, origin) {
			if !strings.Contains(msg, k) {
				t.Fatalf("Decode(%q) field %q is not in the message", msg, k)
			}
		}
		o2, k2, ok := Decode(string(Encode(origin, keys)))
		if !ok || o2 != origin || !slices.Equal(k2, keys) {
			t.Fatalf("re-encoding Decode(%q) = %q, %q decodes to %q, %q, %v", msg, origin, keys, o2, k2, ok)
		}
	})
}
