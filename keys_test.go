package cacheaside

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

type (
	namedString string
	namedInt64  int64
	namedUint8  uint8
)

// encodeWith builds the default encoder of K and encodes k; it fails
// when appendKey (the L1 read-first path's encoding) disagrees with it.
func encodeWith[K comparable](k K) (string, error) {
	enc, err := newKeyEncoder[K](nil)
	if err != nil {
		return "", err
	}
	s := enc(k)
	if b, ok := appendKey([]byte("x"), k); ok && string(b) != "x"+s {
		return "", fmt.Errorf("appendKey(%v) = %q, want %q as the encoder", k, b[1:], s)
	}
	return s, nil
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
