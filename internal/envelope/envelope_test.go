package envelope

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// sameHeader reports whether two headers are equal, comparing expiries as
// instants (Decode returns local times).
func sameHeader(a, b Header) bool {
	return a.Flags == b.Flags && a.Expiry.Equal(b.Expiry) && a.LoadTime == b.LoadTime && a.Type == b.Type && a.Stored.Equal(b.Stored) && a.Clock == b.Clock && bytes.Equal(a.Tags, b.Tags)
}

func TestAppendDecodeRoundTrip(t *testing.T) {
	expiry := time.UnixMilli(1_700_000_000_123)
	tests := []struct {
		name    string
		h       Header
		payload []byte
		want    *Header // what Decode must return when it is not h itself
	}{
		{name: "zero header, nil payload", h: Header{}},
		{name: "zero header, empty payload", h: Header{}, payload: []byte{}},
		{name: "payload", h: Header{}, payload: []byte(`{"id":1,"name":"Ada"}`)},
		{name: "binary payload that looks like an envelope", payload: []byte{0xCA, 0x01, 0x00, 0x02, 0x00, 0x00}},
		{name: "not found", h: Header{Flags: NotFound}},
		{name: "not found with load time", h: Header{Flags: NotFound, LoadTime: 1500 * time.Microsecond}},
		{name: "expiry", h: Header{Expiry: expiry}, payload: []byte("v")},
		{name: "expiry and load time", h: Header{Expiry: expiry, LoadTime: 250 * time.Millisecond}, payload: []byte("v")},
		{name: "type fingerprint", h: Header{Expiry: expiry, LoadTime: time.Millisecond, Type: 0xDEADBEEF}, payload: []byte("v")},
		{name: "stored time", h: Header{Expiry: expiry, LoadTime: time.Millisecond, Type: 0xDEADBEEF, Stored: expiry.Add(-time.Minute)}, payload: []byte("v")},
		{name: "stored time without type fingerprint", h: Header{Expiry: expiry, Stored: expiry.Add(-time.Minute)}, payload: []byte("v")},
		{name: "largest everything", h: Header{Flags: NotFound, Expiry: time.UnixMilli(math.MaxInt64), LoadTime: time.Duration(math.MaxInt64/1000) * time.Microsecond, Type: math.MaxUint32, Stored: time.UnixMilli(math.MaxInt64)}},
		{name: "expiry before the epoch", h: Header{Expiry: time.UnixMilli(-86_400_000)}, payload: []byte("v")},
		{name: "expiry in year 9999", h: Header{Expiry: time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC)}, payload: []byte("v")},
		{name: "expiry in another zone", h: Header{Expiry: expiry.In(time.FixedZone("X", 5*3600))}, payload: []byte("v")},
		{
			name: "expiry below a millisecond is truncated",
			h:    Header{Expiry: time.Unix(1_700_000_000, 123_456_789)},
			want: &Header{Expiry: time.UnixMilli(1_700_000_000_123)},
		},
		{
			name: "load time below a microsecond is truncated",
			h:    Header{LoadTime: 1999 * time.Nanosecond},
			want: &Header{LoadTime: time.Microsecond},
		},
		{name: "negative load time is stored as zero", h: Header{LoadTime: -time.Second}, want: &Header{}},
		{name: "load time an hour", h: Header{LoadTime: time.Hour}},
		{name: "load time 100 years", h: Header{LoadTime: 100 * 365 * 24 * time.Hour}},
		{
			// Append accepts any Duration, so Decode must accept what
			// Append writes for the largest one. Decode rejects load times
			// above 2^62 ns (about 146 years) as corrupt.
			name: "load time max Duration",
			h:    Header{LoadTime: math.MaxInt64},
			want: &Header{LoadTime: time.Duration(math.MaxInt64).Truncate(time.Microsecond)},
		},
		{name: "hint flag", h: Header{Flags: 0x10}, payload: []byte("v")},
		{name: "all hint flags and not found", h: Header{Flags: 0xF0 | NotFound, LoadTime: time.Millisecond}},
		{name: "large payload", h: Header{Expiry: expiry}, payload: bytes.Repeat([]byte("0123456789abcdef"), 1<<16)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := tt.h
			if tt.want != nil {
				want = *tt.want
			}
			b := Append(nil, tt.h, tt.payload)
			h, payload, err := Decode(b)
			if err != nil {
				t.Fatalf("Decode(Append(%+v, %d bytes)) error = %v, want nil", tt.h, len(tt.payload), err)
			}
			if !sameHeader(h, want) {
				t.Errorf("Decode(Append(%+v)) header = %+v, want %+v", tt.h, h, want)
			}
			if !bytes.Equal(payload, tt.payload) {
				t.Errorf("Decode(Append(%+v)) payload = %q, want %q", tt.h, short(payload), short(tt.payload))
			}
			if len(b)-len(tt.payload) > MaxHeader {
				t.Errorf("len(Append(%+v)) - len(payload) = %d, want ≤ MaxHeader = %d", tt.h, len(b)-len(tt.payload), MaxHeader)
			}
		})
	}
}

func TestAppendKeepsDst(t *testing.T) {
	dst := []byte("prefix")
	b := Append(dst, Header{LoadTime: time.Millisecond}, []byte("payload"))
	if !bytes.HasPrefix(b, []byte("prefix")) {
		t.Fatalf("Append(%q, …) = %q, want it to start with %q", "prefix", b, "prefix")
	}
	h, payload, err := Decode(b[len("prefix"):])
	if err != nil || h.LoadTime != time.Millisecond || string(payload) != "payload" {
		t.Errorf("Decode(Append(%q, …)[6:]) = %+v, %q, %v, want LoadTime 1ms, %q, nil", "prefix", h, payload, err, "payload")
	}
}

func TestMaxHeaderBound(t *testing.T) {
	for _, h := range []Header{
		{Flags: 0xFF, Expiry: time.UnixMilli(math.MinInt64), LoadTime: math.MaxInt64},
		{Flags: 0xFF, Expiry: time.UnixMilli(math.MaxInt64), LoadTime: math.MaxInt64},
	} {
		if n := len(Append(nil, h, nil)); n > MaxHeader {
			t.Errorf("len(Append(%+v, nil)) = %d, want ≤ MaxHeader = %d", h, n, MaxHeader)
		}
	}
}

// env builds an envelope by hand: magic, version 1, flags, the header
// length and fields, then the payload.
func env(flags byte, fields, payload []byte) []byte {
	b := []byte{0xCA, 0x01, flags}
	b = binary.AppendUvarint(b, uint64(len(fields)))
	b = append(b, fields...)
	return append(b, payload...)
}

// fields encodes the version 1 header fields followed by extra bytes, as a
// newer writer would append them.
func fields(expiryMs int64, loadUs uint64, extra ...byte) []byte {
	b := binary.AppendVarint(nil, expiryMs)
	b = binary.AppendUvarint(b, loadUs)
	return append(b, extra...)
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		want error
	}{
		{"nil", nil, ErrCorrupt},
		{"empty", []byte{}, ErrCorrupt},
		{"magic only", []byte{0xCA}, ErrCorrupt},
		{"magic and version", []byte{0xCA, 0x01}, ErrCorrupt},
		{"no header length", []byte{0xCA, 0x01, 0x00}, ErrCorrupt},
		{"wrong magic", []byte{0xCB, 0x01, 0x00, 0x02, 0x00, 0x00}, ErrCorrupt},
		{"plain JSON", []byte(`{"id":1}`), ErrCorrupt},
		{"plain string", []byte("hello world"), ErrCorrupt},
		{"version 0", []byte{0xCA, 0x00, 0x00, 0x02, 0x00, 0x00}, ErrVersion},
		{"version 2", []byte{0xCA, 0x02, 0x00, 0x02, 0x00, 0x00}, ErrVersion},
		{"version 255", []byte{0xCA, 0xFF, 0x00, 0x00}, ErrVersion},
		{"version 2 with a layout of its own", []byte{0xCA, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}, ErrVersion},
		{"unknown must-understand flag 0x02", env(0x02, fields(0, 0), nil), ErrVersion},
		{"unknown must-understand flag 0x04", env(0x04, fields(0, 0), nil), ErrVersion},
		{"unknown must-understand flag 0x08", env(0x08, fields(0, 0), []byte("v")), ErrVersion},
		{"not found and unknown flag 0x02", env(0x03, fields(0, 0), nil), ErrVersion},
		{"every must-understand flag", env(0x0F, fields(0, 0), nil), ErrVersion},
		{"hint and unknown must-understand flag", env(0x12, fields(0, 0), nil), ErrVersion},
		{"header length longer than the rest", []byte{0xCA, 0x01, 0x00, 0x05, 0x00, 0x00}, ErrCorrupt},
		{"header length one longer than the rest", []byte{0xCA, 0x01, 0x00, 0x03, 0x00, 0x00}, ErrCorrupt},
		{"header length unterminated", []byte{0xCA, 0x01, 0x00, 0x80}, ErrCorrupt},
		{"header length max uint64", append([]byte{0xCA, 0x01, 0x00}, binary.AppendUvarint(nil, math.MaxUint64)...), ErrCorrupt},
		{"header length max int64", append([]byte{0xCA, 0x01, 0x00}, binary.AppendUvarint(nil, math.MaxInt64)...), ErrCorrupt},
		{"header length overflowing uvarint", append([]byte{0xCA, 0x01, 0x00}, bytes.Repeat([]byte{0xFF}, 11)...), ErrCorrupt},
		{"header length 2^32", append([]byte{0xCA, 0x01, 0x00}, binary.AppendUvarint(nil, 1<<32)...), ErrCorrupt},
		{"expiry unterminated", env(0x00, []byte{0x80}, nil), ErrCorrupt},
		{"expiry overflowing varint", env(0x00, bytes.Repeat([]byte{0xFF}, 11), nil), ErrCorrupt},
		{"load time unterminated", env(0x00, []byte{0x00, 0x80}, nil), ErrCorrupt},
		{"load time overflowing uvarint", env(0x00, append([]byte{0x00}, bytes.Repeat([]byte{0xFF}, 11)...), nil), ErrCorrupt},
		{"load time past the Duration range", env(0x00, fields(0, math.MaxUint64), nil), ErrCorrupt},
		{"not found with a payload", env(byte(NotFound), fields(0, 0), []byte("v")), ErrCorrupt},
		{"not found and a hint with a payload", env(byte(NotFound)|0x10, fields(0, 0), []byte("v")), ErrCorrupt},
		{"not found with extra fields and a payload", env(byte(NotFound), fields(0, 0, 0xAA), []byte{0}), ErrCorrupt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, payload, err := Decode(tt.b)
			if !errors.Is(err, tt.want) {
				t.Errorf("Decode(%x) error = %v, want %v", short(tt.b), err, tt.want)
			}
			if payload != nil {
				t.Errorf("Decode(%x) payload = %q, want nil with an error", short(tt.b), payload)
			}
		})
	}
}

func TestDecodeAccepts(t *testing.T) {
	expiry := int64(1_700_000_000_123)
	tests := []struct {
		name    string
		b       []byte
		want    Header
		payload string
	}{
		{"no header fields (n = 0)", env(0x00, nil, []byte("v")), Header{}, "v"},
		{"expiry field only", env(0x00, binary.AppendVarint(nil, expiry), []byte("v")), Header{Expiry: time.UnixMilli(expiry)}, "v"},
		{"hint flag 0x10", env(0x10, fields(0, 0), []byte("v")), Header{Flags: 0x10}, "v"},
		{"hint flag 0x80 and not found", env(0x81, fields(0, 7), nil), Header{Flags: 0x80 | NotFound, LoadTime: 7 * time.Microsecond}, ""},
		{"every hint flag", env(0xF0, fields(expiry, 1), []byte("v")), Header{Flags: 0xF0, Expiry: time.UnixMilli(expiry), LoadTime: time.Microsecond}, "v"},
		{"expiry zero is none", env(0x00, fields(0, 5), nil), Header{LoadTime: 5 * time.Microsecond}, ""},
		{"type fingerprint", env(0x00, fields(0, 5, binary.AppendUvarint(nil, 0xFFFFFFFF)...), []byte("v")), Header{LoadTime: 5 * time.Microsecond, Type: 0xFFFFFFFF}, "v"},
		{"stored time", env(0x00, fields(expiry, 5, append(binary.AppendUvarint(nil, 9), binary.AppendVarint(nil, expiry-60_000)...)...), []byte("v")), Header{Expiry: time.UnixMilli(expiry), LoadTime: 5 * time.Microsecond, Type: 9, Stored: time.UnixMilli(expiry - 60_000)}, "v"},
		{"v0.2 entry: no stored time", env(0x00, fields(expiry, 5, 0x09), []byte("v")), Header{Expiry: time.UnixMilli(expiry), LoadTime: 5 * time.Microsecond, Type: 9}, "v"},
		{"v0.1 entry: no type fingerprint", env(0x00, fields(expiry, 5), []byte("v")), Header{Expiry: time.UnixMilli(expiry), LoadTime: 5 * time.Microsecond}, "v"},
		{"negative expiry", env(0x00, fields(-1, 0), nil), Header{Expiry: time.UnixMilli(-1)}, ""},
		// A newer writer appends fields after the ones version 1 knows;
		// this reader must skip them and find the payload after them. (The
		// clock and the tags, the last fields this reader knows, are written
		// before them.)
		{
			"newer writer: one extra byte",
			env(0x00, fields(expiry, 2000, 0x07, 0x00, 0x00, 0x00, 0x01), []byte(`{"id":1}`)),
			Header{Expiry: time.UnixMilli(expiry), LoadTime: 2 * time.Millisecond, Type: 7}, `{"id":1}`,
		},
		{
			"newer writer: extra fields that look like an envelope",
			env(0x10, fields(expiry, 3, 0xCA, 0x01, 0xCA, 0x01, 0x00, 0x02, 0x00, 0x00), []byte("payload")),
			Header{Flags: 0x10, Expiry: time.UnixMilli(expiry), LoadTime: 3 * time.Microsecond, Type: 0xCA, Stored: time.UnixMilli(101), Tags: []byte{0x00, 0x00}}, "payload",
		},
		{
			"newer writer: 300 extra bytes (two-byte header length)",
			env(0x00, fields(0, 9, append([]byte{0x05, 0x00, 0x00, 0x00}, bytes.Repeat([]byte{0xFF}, 300)...)...), []byte("p")),
			Header{LoadTime: 9 * time.Microsecond, Type: 5}, "p",
		},
		{
			"newer writer: not found with extra fields",
			env(byte(NotFound), fields(0, 9, 0x00, 0x00, 0x00), nil),
			Header{Flags: NotFound, LoadTime: 9 * time.Microsecond}, "",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, payload, err := Decode(tt.b)
			if err != nil {
				t.Fatalf("Decode(%x) error = %v, want nil", short(tt.b), err)
			}
			if !sameHeader(h, tt.want) {
				t.Errorf("Decode(%x) header = %+v, want %+v", short(tt.b), h, tt.want)
			}
			if string(payload) != tt.payload {
				t.Errorf("Decode(%x) payload = %q, want %q", short(tt.b), payload, tt.payload)
			}
			if len(payload) > 0 && &payload[0] != &tt.b[len(tt.b)-len(payload)] {
				t.Errorf("Decode(%x) payload does not alias the input's tail", short(tt.b))
			}
		})
	}
}

// The golden files fix the exact bytes of version 1. A test that fails here
// means the wire format changed: entries written by deployed processes
// would no longer read, or the reverse. Do not regenerate the files; bump
// the version or add a field after the known ones instead.
func TestGolden(t *testing.T) {
	tests := []struct {
		file    string
		h       Header
		payload string
	}{
		{"empty.hex", Header{}, ""},
		{"not-found.hex", Header{Flags: NotFound, LoadTime: 1500 * time.Microsecond}, ""},
		{"value.hex", Header{Expiry: time.UnixMilli(1_700_000_000_000), LoadTime: 2 * time.Millisecond}, `{"id":1}`},
		{"hint-flag-pre-epoch.hex", Header{Flags: 0x10, Expiry: time.UnixMilli(-1)}, "x"},
		{"value-stored.hex", Header{Expiry: time.UnixMilli(1_700_000_000_000), LoadTime: 2 * time.Millisecond, Type: 7, Stored: time.UnixMilli(1_699_999_400_000)}, `{"id":1}`},
		{"value-clock.hex", Header{Expiry: time.UnixMilli(1_700_000_000_000), LoadTime: 2 * time.Millisecond, Type: 7, Stored: time.UnixMilli(1_699_999_400_000), Clock: 1_700_000_000_123}, `{"id":1}`},
		{"clock-only.hex", Header{Clock: 5}, ""},
		{"tags-only.hex", Header{Tags: AppendTag(nil, "t")}, ""},
		{"value-tags.hex", Header{Type: 7, Clock: 5, Tags: AppendTag(AppendTag(nil, "t1"), "user:42")}, "v"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			want := readHex(t, filepath.Join("testdata", "golden", tt.file))
			if got := Append(nil, tt.h, []byte(tt.payload)); !bytes.Equal(got, want) {
				t.Errorf("Append(%+v, %q) = %x, want %x (testdata/golden/%s)", tt.h, tt.payload, got, want, tt.file)
			}
			h, payload, err := Decode(want)
			if err != nil {
				t.Fatalf("Decode(%x) error = %v, want nil", want, err)
			}
			if !sameHeader(h, tt.h) || string(payload) != tt.payload {
				t.Errorf("Decode(%x) = %+v, %q, want %+v, %q", want, h, payload, tt.h, tt.payload)
			}
		})
	}
}

// readHex reads a file of hex digits; whitespace is ignored and '#' starts
// a comment that runs to the end of the line.
func readHex(t *testing.T, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var digits strings.Builder
	for line := range strings.Lines(string(raw)) {
		line, _, _ = strings.Cut(line, "#")
		digits.WriteString(strings.Join(strings.Fields(line), ""))
	}
	b, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// short trims long byte strings for failure messages.
func short(b []byte) []byte {
	if len(b) <= 64 {
		return b
	}
	return b[:64]
}

func TestTagsOf(t *testing.T) {
	enc := AppendTag(AppendTag(AppendTag(nil, "a"), ""), "tenant:7")
	var got []string
	for tag := range TagsOf(enc) {
		got = append(got, string(tag))
	}
	if want := []string{"a", "", "tenant:7"}; !slices.Equal(got, want) {
		t.Errorf("TagsOf(%x) = %q, want %q", enc, got, want)
	}
	// A malformed list stops at its first bad entry, and Decode rejects it.
	bad := append(AppendTag(nil, "a"), 0x05, 'x')
	got = got[:0]
	for tag := range TagsOf(bad) {
		got = append(got, string(tag))
	}
	if want := []string{"a"}; !slices.Equal(got, want) {
		t.Errorf("TagsOf(%x) = %q, want %q", bad, got, want)
	}
	b := env(0x00, append(fields(0, 0, 0x00, 0x00, 0x01, byte(len(bad))), bad...), []byte("v"))
	if _, _, err := Decode(b); !errors.Is(err, ErrCorrupt) {
		t.Errorf("Decode(%x) with malformed tags error = %v, want ErrCorrupt", b, err)
	}
}
