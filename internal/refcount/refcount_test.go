package refcount

import "testing"

// TestAcquireShares: users of one pointer key share one value, built once;
// the last release reports itself last, and the next Acquire builds anew.
// A key that is not a pointer is never shared.
func TestAcquireShares(t *testing.T) {
	var r Registry[any, *int]
	builds := 0
	build := func() *int { builds++; return new(int) }
	key := new(struct{ _ int })
	a, relA := r.Acquire(key, build)
	b, relB := r.Acquire(key, build)
	if a != b || builds != 1 {
		t.Fatalf("two Acquires of one key: same value %v, %d builds; want the same value, 1 build", a == b, builds)
	}
	if relA() {
		t.Errorf("first of two releases reported last")
	}
	if !relB() {
		t.Errorf("second of two releases did not report last")
	}
	c, relC := r.Acquire(key, build)
	if c == a || builds != 2 {
		t.Errorf("Acquire after the last release: reused the old value %v, %d builds; want a new one, 2 builds", c == a, builds)
	}
	relC()

	v1, rel1 := r.Acquire("client", build)
	v2, rel2 := r.Acquire("client", build)
	if v1 == v2 || !rel1() || !rel2() {
		t.Errorf("a non-pointer key was shared (%v) or a release of it was not last", v1 == v2)
	}
}
