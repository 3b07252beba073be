package decodememo

import (
	"bytes"
	"testing"
)

// BenchmarkMemo: what the memo adds to a decode. miss is a read of keys in
// turn (Lookup finds other bytes, Decoded remembers the hash); hit is a
// hot key's read (Lookup returns the value). The payload is 190 bytes, the
// size of the hit-path benchmarks' JSON values.
func BenchmarkMemo(b *testing.B) {
	payloads := [2][]byte{bytes.Repeat([]byte("a"), 190), bytes.Repeat([]byte("b"), 190)}
	b.Run("miss", func(b *testing.B) {
		m := New[int]()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			p := payloads[i%2]
			i++
			if _, h, ok := m.Lookup("k", p); !ok {
				m.Decoded("k", p, h, i)
			}
		}
	})
	b.Run("hit", func(b *testing.B) {
		m := New[int]()
		for range 2 {
			_, h, _ := m.Lookup("k", payloads[0])
			m.Decoded("k", payloads[0], h, 1)
		}
		b.ReportAllocs()
		for b.Loop() {
			if _, _, ok := m.Lookup("k", payloads[0]); !ok {
				b.Fatal("Lookup: miss, want a hit")
			}
		}
	})
}
