package envelope

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

// FuzzDecode checks that Decode never panics on any input, fails only with
// its documented errors, and that whatever it accepts survives a round trip
// through Append: re-encoding the decoded header and payload and decoding
// again gives the same header and payload. Seeds live in
// testdata/fuzz/FuzzDecode; the ones added here are the golden envelopes.
func FuzzDecode(f *testing.F) {
	f.Add(Append(nil, Header{}, nil))
	f.Add(Append(nil, Header{Flags: NotFound, LoadTime: 1500 * time.Microsecond}, nil))
	f.Add(Append(nil, Header{Expiry: time.UnixMilli(1_700_000_000_000), LoadTime: 2 * time.Millisecond}, []byte(`{"id":1}`)))
	f.Add(Append(nil, Header{Flags: 0x10, Expiry: time.UnixMilli(-1)}, []byte("x")))

	f.Fuzz(func(t *testing.T, b []byte) {
		h, payload, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrVersion) {
				t.Fatalf("Decode(%x) error = %v, want ErrCorrupt or ErrVersion", b, err)
			}
			if payload != nil {
				t.Fatalf("Decode(%x) payload = %x with error %v, want nil", b, payload, err)
			}
			return
		}
		if !bytes.HasSuffix(b, payload) {
			t.Fatalf("Decode(%x) payload = %x, want a suffix of the input", b, payload)
		}
		if h.LoadTime < 0 {
			t.Fatalf("Decode(%x) LoadTime = %v, want ≥ 0", b, h.LoadTime)
		}
		if h.Flags&NotFound != 0 && len(payload) != 0 {
			t.Fatalf("Decode(%x) = not found with payload %x, want no payload", b, payload)
		}

		again := Append(nil, h, payload)
		h2, payload2, err := Decode(again)
		if err != nil {
			t.Fatalf("Decode(Append(Decode(%x))) error = %v, want nil (header %+v)", b, err, h)
		}
		if h2.Flags != h.Flags || !h2.Expiry.Equal(h.Expiry) || h2.LoadTime != h.LoadTime {
			t.Fatalf("Decode(Append(Decode(%x))) header = %+v, want %+v", b, h2, h)
		}
		if !bytes.Equal(payload2, payload) {
			t.Fatalf("Decode(Append(Decode(%x))) payload = %x, want %x", b, payload2, payload)
		}
		// Append writes the canonical form: encoding it again is stable.
		if third := Append(nil, h2, payload2); !bytes.Equal(third, again) {
			t.Fatalf("Append(Decode(%x)) = %x, want the same bytes as the first re-encoding %x", again, third, again)
		}
	})
}
