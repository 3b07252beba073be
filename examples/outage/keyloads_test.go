package main

import (
	"context"
	"errors"
	"testing"
)

func TestRepeated(t *testing.T) {
	ok := func(start, end float64) keyLoad { return keyLoad{StartMs: start, EndMs: end, Returned: true} }
	failed := func(start, end float64) keyLoad {
		return keyLoad{StartMs: start, EndMs: end, Returned: true, Err: "context canceled"}
	}
	running := func(start float64) keyLoad { return keyLoad{StartMs: start} }
	tests := []struct {
		name  string
		calls []keyLoad
		want  uint64
	}{
		{"one call", []keyLoad{ok(0, 5)}, 0},
		{"after a call that returned the row", []keyLoad{ok(0, 5), ok(10, 15)}, 1},
		{"after a failed call", []keyLoad{failed(0, 5), ok(10, 15)}, 0},
		{"after failed calls, then again", []keyLoad{failed(0, 5), failed(6, 8), ok(10, 15), ok(20, 25)}, 1},
		{"beside a call that later failed", []keyLoad{failed(0, 50), ok(10, 15)}, 1},
		{"beside a call still running", []keyLoad{running(0), ok(10, 15)}, 1},
		{"three calls after a good one", []keyLoad{ok(0, 5), ok(10, 15), failed(20, 25), ok(30, 35)}, 3},
	}
	for _, tt := range tests {
		if got := repeated(tt.calls); got != tt.want {
			t.Errorf("%s: repeated(%+v) = %d, want %d", tt.name, tt.calls, got, tt.want)
		}
	}
}

func TestKeyLoadsStop(t *testing.T) {
	var k keyLoads
	k.begin(context.Background(), 1)(nil) // not recording: not counted
	k.start()
	ctx := func(i int) context.Context { return withInstance(context.Background(), i) }
	for i := range 3 { // key 7 once by each of three instances
		k.begin(ctx(i), 7)(nil)
	}
	k.begin(ctx(0), 9)(errors.New("boom")) // key 9: failed, then twice more
	k.begin(ctx(0), 9)(nil)
	k.begin(ctx(0), 9)(nil)
	end := k.begin(context.WithValue(ctx(1), requestKey{}, true), 9)
	most, repeats, calls := k.stop()
	end(nil) // returned after the recording stopped: not recorded
	if most != 4 || repeats != 1 {
		t.Errorf("stop() = most %d, repeats %d; want 4 and 1", most, repeats)
	}
	if len(calls) != 1 || len(calls[0]) != 3 || calls[0][0].Instance != 0 || calls[0][0].Key != 9 || calls[0][0].Err != "boom" || calls[0][0].Request {
		t.Fatalf("stop() calls = %+v, want instance 0's three calls of key 9, the first failed", calls)
	}
	if most, repeats, calls := k.stop(); most != 0 || repeats != 0 || calls != nil {
		t.Errorf("stop() again = %d, %d, %v; want nothing recorded", most, repeats, calls)
	}
}
