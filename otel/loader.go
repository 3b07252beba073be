package cacheotel

import (
	"context"
	"errors"
	"time"

	"github.com/cacheaside/cacheaside"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// The names WrapLoader records under.
const (
	loadDurationName = "cacheaside.load.duration"
	loadSpanName     = "cacheaside.load"
	attrOutcome      = "outcome"
	attrBatchKeys    = "cacheaside.batch.keys"
)

// The values of the outcome attribute.
const (
	outcomeOK       = "ok"        // the loader returned a value
	outcomeNotFound = "not_found" // the loader returned an error wrapping cacheaside.ErrNotFound
	outcomeError    = "error"     // any other error, a timeout, or a panic
)

// loadBuckets are the histogram's bucket bounds in seconds, those the
// OpenTelemetry semantic conventions give for request durations: a load is
// a database request.
var loadBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}

// WrapLoader returns a loader that calls load and records how long each
// call took in the histogram cacheaside.load.duration (seconds), with the
// attribute outcome set to ok, not_found (an error wrapping
// [cacheaside.ErrNotFound]) or error (any other error, including the load
// timeout, and a panic). With [WithTracerProvider] each call also runs in a
// span named cacheaside.load whose status is Error when the load failed; a
// not-found answer is not an error. A nil load returns nil, which
// [cacheaside.New] reports.
//
// # Which trace a load joins
//
// The cache calls the loader with a context that carries the values of the
// call that started the load: the Get that started the flight (the cache
// keeps that caller's values but not its cancellation), or Warm. The span
// is therefore a child of that caller's span, when it has one. The other
// Gets of this process that share the flight wait for the same load: the
// span gets a link to each of their spans (those that joined before the
// load ended, up to 128 per key), read with [cacheaside.Waiters] when the
// load ends. Gets in other processes, which wait through the fill lock, their traces show the
// wait without the load. Loads of the automatic warm-up after an empty
// Redis restart have no caller and start a new trace.
//
// A panic in load is recorded (outcome error, span status Error) and goes
// on to the cache, which returns it as a [*cacheaside.PanicError] with the
// loader's original stack.
func WrapLoader[K comparable, V any](load cacheaside.LoadFunc[K, V], opts ...Option) cacheaside.LoadFunc[K, V] {
	if load == nil {
		return nil
	}
	rec := newRecorder(opts)
	return func(ctx context.Context, key K) (v V, err error) {
		ctx, end := rec.start(ctx)
		panicked := true
		defer func() { end(err, panicked) }()
		v, err = load(ctx, key)
		panicked = false
		return v, err
	}
}

// WrapBatchLoader is [WrapLoader] for a [cacheaside.BatchLoadFunc]. Each
// call is one load in cacheaside.load.duration, as it is one load in
// [cacheaside.Stats].Loads, with the outcomes of WrapLoader (keys missing
// from the map are no error: the outcome is ok). With [WithTracerProvider]
// each call runs in one cacheaside.load span, with the attribute
// cacheaside.batch.keys set to the number of keys asked for, in the trace
// of the call that started the batch, as described for WrapLoader. A nil
// load returns nil.
func WrapBatchLoader[K comparable, V any](load cacheaside.BatchLoadFunc[K, V], opts ...Option) cacheaside.BatchLoadFunc[K, V] {
	if load == nil {
		return nil
	}
	rec := newRecorder(opts)
	return func(ctx context.Context, keys []K) (m map[K]V, err error) {
		ctx, end := rec.start(ctx, attribute.Int(attrBatchKeys, len(keys)))
		panicked := true
		defer func() { end(err, panicked) }()
		m, err = load(ctx, keys)
		panicked = false
		return m, err
	}
}

// recorder records the loads of one wrapped loader.
type recorder struct {
	hist     metric.Float64Histogram
	outcomes map[string]metric.RecordOption
	tracer   trace.Tracer // nil: no spans
	spanOpts []trace.SpanStartOption
}

func newRecorder(opts []Option) *recorder {
	cfg := defaultConfig()
	for _, opt := range opts {
		if opt != nil {
			opt(&cfg)
		}
	}
	r := &recorder{outcomes: map[string]metric.RecordOption{}}
	var err error
	r.hist, err = cfg.meters.Meter(ScopeName).Float64Histogram(loadDurationName,
		metric.WithUnit("s"),
		metric.WithDescription("Duration of loader calls made by the cache."),
		metric.WithExplicitBucketBoundaries(loadBuckets...))
	if err != nil {
		// Report the problem the way OpenTelemetry instrumentations do,
		// and load without the histogram rather than fail every load.
		otel.Handle(err)
		if r.hist == nil {
			r.hist = metricnoop.Float64Histogram{}
		}
	}
	for _, o := range []string{outcomeOK, outcomeNotFound, outcomeError} {
		r.outcomes[o] = metric.WithAttributeSet(attributes(cfg.name, attribute.String(attrOutcome, o)))
	}
	if cfg.tracers != nil {
		r.tracer = cfg.tracers.Tracer(ScopeName)
		r.spanOpts = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal)}
		if cfg.name != "" {
			r.spanOpts = append(r.spanOpts, trace.WithAttributes(attribute.String(attrCache, cfg.name)))
		}
	}
	return r
}

// start begins recording one load. It returns the context to load with,
// which carries the load's span, and the function that ends the recording
// with the loader's error, or with panicked set when the loader panicked.
// A panic is not recovered, so that the cache's recover sees the loader's
// own stack.
func (r *recorder) start(ctx context.Context, attrs ...attribute.KeyValue) (context.Context, func(err error, panicked bool)) {
	var span trace.Span = tracenoop.Span{}
	if r.tracer != nil {
		opts := r.spanOpts[:len(r.spanOpts):len(r.spanOpts)] // append must copy: r is shared
		ctx, span = r.tracer.Start(ctx, loadSpanName, append(opts, trace.WithAttributes(attrs...))...)
	}
	begin := time.Now()
	return ctx, func(err error, panicked bool) {
		outcome := outcomeOK
		switch {
		case panicked:
			outcome = outcomeError
			span.SetStatus(codes.Error, "loader panicked")
		case errors.Is(err, cacheaside.ErrNotFound):
			outcome = outcomeNotFound
		case err != nil:
			outcome = outcomeError
			span.RecordError(err)
			span.SetStatus(codes.Error, err.Error())
		}
		r.hist.Record(ctx, time.Since(begin).Seconds(), r.outcomes[outcome])
		span.SetAttributes(attribute.String(attrOutcome, outcome))
		if span.IsRecording() {
			for _, w := range cacheaside.Waiters(ctx) {
				if sc := trace.SpanContextFromContext(w); sc.IsValid() {
					span.AddLink(trace.Link{SpanContext: sc})
				}
			}
		}
		span.End()
	}
}
