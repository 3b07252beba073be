package tagclock

import "testing"

// TestAdvLeaseDropsOutOfOrderKeepTheLaterFloor: two Drops that race (a
// clock found lost or unreadable by a read, and another process's Clear
// heard on the L1 feed) take their Now before the lock and may apply in
// the other order. A read sent between the two instants, which may have
// read the clock from before the Clear, must still extend nothing: the
// later Drop's floor must stand.
func TestAdvLeaseDropsOutOfOrderKeepTheLaterFloor(t *testing.T) {
	var l Lease
	a := int64(5_000_000_000) // the read that found the clock lost: its Now
	b := a + 100              // the feed's Clear marker, processed later
	l.Drop(b)                 // the feed's Drop takes the lock first
	l.Drop(a)                 // then the loss's
	sent := a + 50            // a read sent before the feed's Drop
	l.Extend(sent)
	if l.Held(b + 1) {
		t.Errorf("a read sent at %d, before a Drop at %d, extended the lease (floor went back to %d)", sent, b, a)
	}
}
