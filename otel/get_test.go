package cacheotel_test

import (
	"context"
	"errors"
	"testing"

	"go.opentelemetry.io/otel/codes"
)

// TestGetSpans checks that GetHook records a cacheaside.get span per Get
// with its result, in the caller's trace, and Error status on an error.
func TestGetSpans(t *testing.T) {
	r := newRig(t, loadProduct)
	ctx, parent := r.tracer.Tracer("test").Start(context.Background(), "request")
	for range 2 {
		if _, err := r.cache.Get(ctx, 1); err != nil {
			t.Fatalf("Get(1) = %v", err)
		}
	}
	if _, err := r.cache.Get(ctx, 3); !errors.Is(err, errDatabase) {
		t.Fatalf("Get(3) error = %v, want %v", err, errDatabase)
	}
	parent.End()

	var results []string
	for _, s := range r.spans.Ended() {
		if s.Name() != "cacheaside.get" {
			continue
		}
		res := spanAttr(s, "result")
		results = append(results, res)
		if s.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("cacheaside.get span (%s) has parent %v, want the caller's span %v", res, s.Parent().SpanID(), parent.SpanContext().SpanID())
		}
		if want := (res == "error"); (s.Status().Code == codes.Error) != want {
			t.Errorf("cacheaside.get span (%s) status = %v, want Error only for an error", res, s.Status())
		}
		if spanAttr(s, "cache") != cacheName || !s.EndTime().After(s.StartTime()) {
			t.Errorf("cacheaside.get span (%s): cache = %q, start %v, end %v; want %q and a positive duration", res, spanAttr(s, "cache"), s.StartTime(), s.EndTime(), cacheName)
		}
	}
	if want := []string{"miss", "hit", "error"}; len(results) != 3 || results[0] != want[0] || results[1] != want[1] || results[2] != want[2] {
		t.Errorf("cacheaside.get spans by result = %v, want %v", results, want)
	}
}
