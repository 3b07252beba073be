package cacheaside_test

import (
	"bytes"
	"encoding/gob"
	"testing"

	"github.com/cacheaside/cacheaside"
)

// gobCodec is encoding/gob as a cacheaside.Codec: one encoder per value,
// since every Redis entry must decode on its own.
type gobCodec struct{}

func (gobCodec) Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	err := gob.NewEncoder(&buf).Encode(v)
	return buf.Bytes(), err
}

func (gobCodec) Unmarshal(data []byte, v any) error {
	return gob.NewDecoder(bytes.NewReader(data)).Decode(v)
}

// BenchmarkCodec measures the default codec (JSON) against encoding/gob,
// the standard library's binary alternative, on the ~200-byte value of the
// hit-path benchmarks: the decode is part of every hit, the encode of every
// fill. It reports the encoded size too.
//
//	go test -run '^$' -bench Codec -count 10 . | tee codec.txt; benchstat -col /codec codec.txt
func BenchmarkCodec(b *testing.B) {
	v := newBenchProduct(4242)
	for _, tc := range []struct {
		name  string
		codec cacheaside.Codec
	}{{"json", cacheaside.JSON{}}, {"gob", gobCodec{}}} {
		data, err := tc.codec.Marshal(v)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("op=encode/codec="+tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tc.codec.Marshal(v); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(data)), "bytes")
		})
		b.Run("op=decode/codec="+tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var out benchProduct
				if err := tc.codec.Unmarshal(data, &out); err != nil || out.ID != v.ID {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(data)), "bytes")
		})
	}
}
