package cacheaside

import (
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The in-process cache's bookkeeping, without Redis: which writes an
// invalidation takes back, and which entries healthy reads trust. The
// races these rules close are shown end to end in local_window_test.go.

func newTestLocal(t *testing.T) *local[int] {
	t.Helper()
	l, err := newLocal[int](100, time.Minute)
	if err != nil {
		t.Fatalf("newLocal: %v", err)
	}
	t.Cleanup(l.close)
	return l
}

func TestLocalDropsPutsThatRacedAnInvalidation(t *testing.T) {
	l := newTestLocal(t)
	l.verifyFromNow()
	began := l.epoch.Load() // reads of k and other begin
	other := "other"
	for i := 0; l.stripe(other) == l.stripe("k"); i++ {
		other = "other" + strings.Repeat("+", i)
	}
	l.invalidate("k") // k changes while they are in flight

	l.put("k", result[int]{val: 1}, time.Time{}, began)
	if r, ok := l.get("k", false); ok {
		t.Errorf("get(k) = %v after a put whose read began before k's invalidation, want no entry", r.val)
	}
	l.put(other, result[int]{val: 2}, time.Time{}, began)
	if r, ok := l.get(other, true); !ok || r.val != 2 {
		t.Errorf("get(%q) = %v, %v; want 2: only k was invalidated, and %q is in another stripe", other, r.val, ok, other)
	}
	l.put("k", result[int]{val: 3}, time.Time{}, l.epoch.Load())
	if r, ok := l.get("k", true); !ok || r.val != 3 {
		t.Errorf("get(k) = %v, %v; want 3, read after the invalidation", r.val, ok)
	}
}

func TestLocalTrustsOnlyReadsUnderTheCurrentSubscription(t *testing.T) {
	l := newTestLocal(t)
	steps := []struct {
		do      func()
		key     string
		healthy bool // whether a healthy read may use key
	}{
		{func() { l.put("a", result[int]{val: 1}, time.Time{}, l.epoch.Load()) }, "a", false}, // never subscribed
		{l.verifyFromNow, "a", false}, // read before the subscription
		{func() { l.put("b", result[int]{val: 2}, time.Time{}, l.epoch.Load()) }, "b", true},
		{l.unverify, "b", false},      // the subscription dropped
		{l.verifyFromNow, "b", false}, // and came back: b may have missed an invalidation
		{func() { l.refresh("b", result[int]{val: 2}, time.Time{}, l.epoch.Load()) }, "b", true},
		{l.verifyFromNow, "b", false}, // a message nobody can read
	}
	for i, s := range steps {
		s.do()
		if _, ok := l.get(s.key, true); ok != s.healthy {
			t.Errorf("step %d: healthy get(%s) found it = %v, want %v", i, s.key, ok, s.healthy)
		}
		if _, ok := l.get(s.key, false); !ok {
			t.Errorf("step %d: get(%s) during an outage found nothing, want the entry", i, s.key)
		}
	}
}

func TestInvalidationRoundTrip(t *testing.T) {
	for _, keys := range [][]string{
		{"ca:{1}"},
		{"ca:{1}", "ca:{2}", "ca:{3}"},
		{"p\n:{a\nb}", "\n", "", "\x00", "\xff\xfe", "\r\n\r\n", strings.Repeat("k", 300)},
		{},
	} {
		msg := encodeInvalidation("0123456789abcdef.", keys)
		origin, got, ok := decodeInvalidation(string(msg))
		if !ok || origin != "0123456789abcdef." || !slices.Equal(got, keys) {
			t.Errorf("decodeInvalidation(encodeInvalidation(%q)) = %q, %q, %v; want the origin and keys back", keys, origin, got, ok)
		}
	}
}

func TestDecodeInvalidationRejects(t *testing.T) {
	valid := string(encodeInvalidation("o.", []string{"ca:{1}"}))
	for name, msg := range map[string]string{
		"empty":                  "",
		"earlier format":         "0123456789abcdef.\nca:{1}\nca:{2}",
		"format only":            invFormat,
		"other version":          "\x00inv2" + valid[len(invFormat):],
		"cut in a key":           valid[:len(valid)-1],
		"length past the end":    invFormat + "\x02o.\x7fca:{1}",
		"length overflows":       invFormat + "\x02o.\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
		"varint cut short":       invFormat + "\x02o.\x80",
		"huge origin length":     invFormat + "\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
		"uvarint longer than 10": invFormat + "\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00",
	} {
		if origin, keys, ok := decodeInvalidation(msg); ok {
			t.Errorf("%s: decodeInvalidation(%q) = %q, %q, true; want ok false", name, msg, origin, keys)
		}
	}
}

// FuzzDecodeInvalidation: whatever arrives on the channel, decoding never
// panics, keys are substrings of the message, and a message it accepts
// says the same once encoded again.
func FuzzDecodeInvalidation(f *testing.F) {
	f.Add(encodeInvalidation("0123456789abcdef.", []string{"ca:{1}", "ca:{a\nb}"}))
	f.Add(encodeInvalidation("", nil))
	f.Add([]byte("0123456789abcdef.\nca:{1}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		msg := string(b)
		origin, keys, ok := decodeInvalidation(msg)
		if !ok {
			if origin != "" || keys != nil {
				t.Fatalf("decodeInvalidation(%q) = %q, %q with ok false, want nothing", msg, origin, keys)
			}
			return
		}
		for _, k := range append(keys, origin) {
			if !strings.Contains(msg, k) {
				t.Fatalf("decodeInvalidation(%q) field %q is not in the message", msg, k)
			}
		}
		o2, k2, ok := decodeInvalidation(string(encodeInvalidation(origin, keys)))
		if !ok || o2 != origin || !slices.Equal(k2, keys) {
			t.Fatalf("re-encoding decodeInvalidation(%q) = %q, %q decodes to %q, %q, %v", msg, origin, keys, o2, k2, ok)
		}
	})
}

// BenchmarkLocalPut measures an L1 write, with its check that no
// invalidation of the key came since its read began, on many distinct keys
// in parallel. BenchmarkLocalGet is a healthy read of a trusted entry.
func BenchmarkLocalPut(b *testing.B) {
	l, vkeys := benchLocal(b)
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(7919))
		for pb.Next() {
			i = (i + 1) % len(vkeys)
			l.put(vkeys[i], result[int]{val: i}, time.Time{}, l.epoch.Load())
		}
	})
}

func BenchmarkLocalGet(b *testing.B) {
	l, vkeys := benchLocal(b)
	for i, k := range vkeys {
		l.put(k, result[int]{val: i}, time.Time{}, l.epoch.Load())
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(7919))
		for pb.Next() {
			i = (i + 1) % len(vkeys)
			if _, ok := l.get(vkeys[i], true); !ok {
				b.Errorf("get(%s) found nothing", vkeys[i])
				return
			}
		}
	})
}

// benchLocal returns a subscribed L1 of 10,000 entries and as many value
// keys.
func benchLocal(b *testing.B) (*local[int], []string) {
	l, err := newLocal[int](10_000, time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(l.close)
	l.verifyFromNow()
	vkeys := make([]string, 10_000)
	for i := range vkeys {
		vkeys[i] = valueKey("ca:", strconv.Itoa(i))
	}
	return l, vkeys
}
