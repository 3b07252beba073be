package testlog

import (
	"context"
	"testing"
)

func TestAttachRoutesToTheRunningTest(t *testing.T) {
	var inner testing.TB
	t.Run("attached", func(t *testing.T) {
		inner = t
		Attach(t)
		Attach(t) // twice: once on the stack
		logs.mu.Lock()
		n := len(logs.attached)
		logs.mu.Unlock()
		if n != 1 {
			t.Errorf("after Attach twice, %d tests attached, want 1", n)
		}
		logs.Printf(context.Background(), "to %s", "the test log")
	})
	logs.mu.Lock()
	defer logs.mu.Unlock()
	for _, a := range logs.attached {
		if a == inner {
			t.Errorf("the subtest is still attached after it ended")
		}
	}
}

func TestOrphansKeepTheLast(t *testing.T) {
	logs.mu.Lock()
	saved, savedDropped := logs.orphans, logs.dropped
	logs.orphans, logs.dropped = nil, 0
	logs.mu.Unlock()
	t.Cleanup(func() {
		logs.mu.Lock()
		logs.orphans, logs.dropped = saved, savedDropped
		logs.mu.Unlock()
	})
	for i := range keep + 5 {
		logs.Printf(context.Background(), "line %d", i)
	}
	logs.mu.Lock()
	defer logs.mu.Unlock()
	if len(logs.orphans) != keep || logs.dropped != 5 || logs.orphans[0] != "line 5" {
		t.Errorf("after %d lines: %d kept, %d dropped, first %q; want %d, 5, %q", keep+5, len(logs.orphans), logs.dropped, logs.orphans[0], keep, "line 5")
	}
}
