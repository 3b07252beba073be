package tagclock

import (
	"testing"
	"time"
)

// TestLeaseHeldForTrustAfterTheRead: a lease extended from a read sent at
// s is held before s + Trust and not from then on; a later read extends
// it, an earlier one never shortens it.
func TestLeaseHeldForTrustAfterTheRead(t *testing.T) {
	var l Lease
	if l.Held(1) {
		t.Fatal("zero Lease held")
	}
	s := int64(1_000_000_000)
	l.Extend(s)
	if !l.Held(s) || !l.Held(s+int64(Trust)-1) {
		t.Errorf("not held within Trust of the read")
	}
	if l.Held(s + int64(Trust)) {
		t.Errorf("held Trust after the read")
	}
	l.Extend(s + 10)
	if !l.Held(s + int64(Trust) + 9) {
		t.Errorf("a later read did not extend the lease")
	}
	l.Extend(s - int64(Trust)/2)
	if !l.Held(s + int64(Trust) + 9) {
		t.Errorf("an earlier read shortened the lease")
	}
}

// TestLeaseDropIgnoresReadsSentBefore: after Drop at d, a read sent
// before d (answered after it) extends nothing; one sent at or after d
// does.
func TestLeaseDropIgnoresReadsSentBefore(t *testing.T) {
	var l Lease
	d := int64(5_000_000_000)
	l.Extend(d - 10)
	l.Drop(d)
	if l.Held(d) {
		t.Fatal("held after Drop")
	}
	l.Extend(d - 1)
	if l.Held(d) {
		t.Errorf("a read sent before the Drop extended the lease")
	}
	l.Extend(d)
	if !l.Held(d + 1) {
		t.Errorf("a read sent at the Drop did not extend the lease")
	}
}

// TestWaitSettled waits until Settle has passed since the write, and not
// at all once it has.
func TestWaitSettled(t *testing.T) {
	if Settle < 2*Trust {
		t.Fatalf("Settle %v leaves no margin over Trust %v", Settle, Trust)
	}
	written := Now()
	WaitSettled(written)
	if waited := time.Duration(Now() - written); waited < Settle {
		t.Errorf("WaitSettled returned %v after the write, want >= %v", waited, Settle)
	}
	t0 := time.Now()
	WaitSettled(Now() - int64(time.Hour))
	if d := time.Since(t0); d > time.Second {
		t.Errorf("WaitSettled of a write long past took %v", d)
	}
}
