package tagclock

import (
	"errors"
	"testing"

	"github.com/cacheaside/cacheaside/internal/redisguard"
)

func TestParse(t *testing.T) {
	tests := []struct {
		raw            string
		clock, cleared uint64
		ok             bool
		err            error
	}{
		{"10:7", 10, 7, true, nil},
		{"10:10", 10, 10, true, nil},
		{"10:11", 0, 0, false, ErrCorrupt}, // a Clear after the clock
		{"garbage", 0, 0, false, ErrCorrupt},
		{":", 0, 0, false, ErrCorrupt},
		{"-1:0", 0, 0, false, ErrCorrupt},
		{"18446744073709551616:1", 0, 0, false, ErrCorrupt},
		{"999999999999999:0", MaxClock, 0, true, nil},
		{"1000000000000000:0", 0, 0, false, ErrCorrupt}, // past MaxClock: the script cannot add 1 to it exactly
	}
	for _, tt := range tests {
		clock, cleared, ok, err := Parse([]byte(tt.raw))
		if clock != tt.clock || cleared != tt.cleared || ok != tt.ok || !errors.Is(err, tt.err) {
			t.Errorf("Parse(%q) = %d, %d, %v, %v; want %d, %d, %v, %v", tt.raw, clock, cleared, ok, err, tt.clock, tt.cleared, tt.ok, tt.err)
		}
	}
	if _, _, ok, err := Parse(nil); ok || err != nil {
		t.Errorf("Parse(nil) = ok %v, %v; want false, nil", ok, err)
	}
}

// TestMemoParsesAsParse: a Memo answers every value as Parse does,
// whether it parsed it last (its memory) or not, and keeps no alias of
// the bytes it was given: a reply buffer reused for the next clock value
// is parsed anew.
func TestMemoParsesAsParse(t *testing.T) {
	var m Memo
	buf := []byte("10:7")
	for _, raw := range [][]byte{buf, buf, []byte("10:7"), nil, []byte("junk"), []byte("10:7"), []byte("12:12"), []byte("10:11"), []byte("12:12")} {
		clock, cleared, ok, err := m.Parse(raw)
		wc, wcl, wok, werr := Parse(raw)
		if clock != wc || cleared != wcl || ok != wok || !errors.Is(err, werr) {
			t.Errorf("Memo.Parse(%q) = %d, %d, %v, %v; want Parse's %d, %d, %v, %v", raw, clock, cleared, ok, err, wc, wcl, wok, werr)
		}
	}
	m.Parse(buf)
	copy(buf, "11:8") // the buffer of the next reply
	if clock, cleared, _, _ := m.Parse(buf); clock != 11 || cleared != 8 {
		t.Errorf("Memo.Parse(%q) in the buffer of the last value = %d:%d, want 11:8", buf, clock, cleared)
	}
}

func TestKnown(t *testing.T) {
	var k Known
	if !k.Valid(0) {
		t.Errorf("Valid(0) with no clock known = false, want true")
	}
	_ = k.Observe([]byte("20:15"))
	_ = k.Observe([]byte("18:12")) // an older read: clocks only grow
	if k.Clock() != 20 || k.Valid(14) || !k.Valid(15) {
		t.Errorf("after 20:15: Clock() = %d, Valid(14) = %v, Valid(15) = %v; want 20, false, true", k.Clock(), k.Valid(14), k.Valid(15))
	}
	if err := k.Observe([]byte("junk")); !errors.Is(err, ErrCorrupt) || k.Valid(20) {
		t.Errorf("Observe(junk) = %v, Valid(20) = %v; want ErrCorrupt, false", err, k.Valid(20))
	}
	_ = k.Observe([]byte("21:15"))
	k.Begin(false, []string{"a", "b"})
	k.Done(false, []string{"a"})
	if k.Valid(21) {
		t.Errorf("Valid(21) with tag b pending = true, want false")
	}
	k.Done(true, nil) // a Clear covers every tag
	if !k.Valid(21) {
		t.Errorf("Valid(21) after a Clear got through = false, want true")
	}
}

func TestVersions(t *testing.T) {
	var v Versions
	if _, ok := v.Lookup([]byte("a"), 1); ok {
		t.Errorf("Lookup on empty Versions: ok, want not known")
	}
	v.Store(10, []string{"a", "b", "c"}, [][]byte{[]byte("7"), nil, []byte("x")})
	for _, tt := range []struct {
		tag   string
		clock uint64
		want  uint64
		ok    bool
	}{
		{"a", 10, 7, true},
		{"b", 9, Unknown, true},  // missing: evicted, maybe
		{"c", 10, Unknown, true}, // not a clock: newer than any
		{"a", 11, 0, false},      // known as of 10 only
		{"d", 10, 0, false},
	} {
		if got, ok := v.Lookup([]byte(tt.tag), tt.clock); got != tt.want || ok != tt.ok {
			t.Errorf("Lookup(%q, %d) = %d, %v; want %d, %v", tt.tag, tt.clock, got, ok, tt.want, tt.ok)
		}
	}
	v.Store(9, []string{"d"}, [][]byte{nil}) // older than what is known: ignored
	if _, ok := v.Lookup([]byte("d"), 10); ok {
		t.Errorf("Lookup(d) after an older Store: known, want not")
	}
	v.Store(12, []string{"d"}, [][]byte{[]byte("11")}) // a newer clock starts again
	if _, ok := v.Lookup([]byte("a"), 12); ok {
		t.Errorf("Lookup(a, 12) after a Store at 12 without a: known, want not")
	}
}

// TestReplicaKeysSpread: one replica per block of slots, each in its
// block, and the list is fixed (a change would split processes of two
// versions).
func TestReplicaKeysSpread(t *testing.T) {
	keys := ReplicaKeys("p:")
	if len(keys) != NumReplicas {
		t.Fatalf("ReplicaKeys() = %d keys, want %d", len(keys), NumReplicas)
	}
	for i, k := range keys {
		if s := redisguard.Slot(k); int(s)/(16384/NumReplicas) != i {
			t.Errorf("replica %d (%s) in slot %d, want block %d", i, k, s, i)
		}
	}
	if keys[0] != "p:{c113}:clock" || keys[1] != "p:{c267}:clock" || keys[255] != "p:{c143}:clock" {
		t.Errorf("ReplicaKeys() = %q, %q, ..., %q, want the fixed p:{c113}:clock, p:{c267}:clock, ..., p:{c143}:clock", keys[0], keys[1], keys[255])
	}
}

// TestReplicasForNodeWithoutReplicaIsCached: a node that owns no replica
// (fewer than 64 slots, none of them a replica's) is answered from what
// was found at the first lookup, not by scanning the 256 replicas again
// at every read; a slot map reload (Reload) looks again.
func TestReplicasForNodeWithoutReplicaIsCached(t *testing.T) {
	var calls int
	owner := "a:1"
	r := NewReplicas("p:", func(string) string { calls++; return owner })
	if got := r.For("b:2"); got != "" {
		t.Fatalf("For(b:2) = %q, want none", got)
	}
	first := calls
	for range 100 {
		r.For("b:2")
	}
	if n := calls - first; n > 100 {
		t.Errorf("100 more For(b:2) of a node without a replica looked up %d owners, want at most 100 (one per call)", n)
	}
	owner = "b:2" // the node took the slots: after a reload it is found
	r.Reload()
	if got := r.For("b:2"); got == "" {
		t.Errorf("For(b:2) after Reload, owning every slot = none, want a replica")
	}
}

// BenchmarkReplicasForNodeWithoutReplica is the CPU of choosing the clock
// a read carries on a node that owns no replica.
func BenchmarkReplicasForNodeWithoutReplica(b *testing.B) {
	r := NewReplicas("p:", func(k string) string { return "a:1" })
	b.ReportAllocs()
	for b.Loop() {
		r.For("b:2")
	}
}
