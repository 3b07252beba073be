package decodememo

import (
	"fmt"
	"sync"
	"testing"
)

// TestKeepsBytesDecodedTwiceInARow: the memo answers only for bytes that
// were decoded twice in a row, and only with the value decoded from them.
func TestKeepsBytesDecodedTwiceInARow(t *testing.T) {
	m := New[string]()
	decode := func(b string) (got string, memo bool) {
		v, h, ok := m.Lookup("k", []byte(b))
		if ok {
			return v, true
		}
		v = "v(" + b + ")"
		m.Decoded("k", []byte(b), h, v)
		return v, false
	}
	steps := []struct {
		bytes    string
		wantMemo bool
	}{
		{"a", false},
		{"b", false}, // a then b: nothing kept
		{"b", false}, // b decoded twice in a row: kept now
		{"b", true},
		{"a", false}, // a is not b
		{"b", true},  // b is still kept
		{"a", false}, // the decode before was a's too (b came from the memo): a replaces b
		{"a", true},
		{"b", false},
		{"", false},
		{"", false},
		{"", true}, // empty bytes are bytes like any others
	}
	for i, s := range steps {
		got, memo := decode(s.bytes)
		if want := "v(" + s.bytes + ")"; got != want || memo != s.wantMemo {
			t.Errorf("step %d: decode(%q) = %q from memo %v, want %q from memo %v", i, s.bytes, got, memo, want, s.wantMemo)
		}
	}
}

// TestKeepsACopy: the memo must not alias the caller's buffer, which the
// Redis client reuses.
func TestKeepsACopy(t *testing.T) {
	m := New[string]()
	buf := []byte("one")
	_, h, _ := m.Lookup("k", buf)
	m.Decoded("k", buf, h, "1")
	m.Decoded("k", buf, h, "1")
	copy(buf, "two")
	if v, _, ok := m.Lookup("k", buf); ok {
		t.Fatalf("Lookup(%q) = %q after the buffer changed under the memo, want a miss", buf, v)
	}
	if v, _, ok := m.Lookup("k", []byte("one")); !ok || v != "1" {
		t.Fatalf("Lookup(one) = %q, %v, want 1, true", v, ok)
	}
}

// TestConcurrentUse: goroutines decoding the same and different bytes at
// once always get the value of their own bytes (run with -race).
func TestConcurrentUse(t *testing.T) {
	m := New[string]()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				b := fmt.Sprint(i % (g + 1))
				v, h, ok := m.Lookup("k", []byte(b))
				if !ok {
					v = "v" + b
					m.Decoded("k", []byte(b), h, v)
				}
				if v != "v"+b {
					t.Errorf("goroutine %d: value of %q = %q", g, b, v)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestOnlyForItsKey: equal bytes read under another key are decoded anew
// (their callers must not share a value with the first key's), and take
// the memo over when they are decoded twice in a row.
func TestOnlyForItsKey(t *testing.T) {
	m := New[*[]int]()
	b := []byte("[1,2,3]")
	a := &[]int{1, 2, 3}
	for range 2 {
		_, h, _ := m.Lookup("a", b)
		m.Decoded("a", b, h, a)
	}
	if v, _, ok := m.Lookup("a", b); !ok || v != a {
		t.Fatalf("Lookup(a) = %p, %v, want %p, true", v, ok, a)
	}
	v, h, ok := m.Lookup("b", b)
	if ok {
		t.Fatalf("Lookup(b) with a's bytes = %p, true: key b would share a's value", v)
	}
	other := &[]int{1, 2, 3}
	m.Decoded("b", b, h, other) // the decode before was of these bytes too
	if v, _, ok := m.Lookup("b", b); !ok || v != other {
		t.Fatalf("Lookup(b) = %p, %v after b was decoded, want %p, true", v, ok, other)
	}
	if v, _, ok := m.Lookup("a", b); ok {
		t.Fatalf("Lookup(a) = %p, true after b took the memo over, want a miss", v)
	}
}
