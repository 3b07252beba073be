package cacheotel

import (
	"context"
	"time"

	"github.com/cacheaside/cacheaside"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
)

// The names GetHook records under.
const (
	requestsName    = "cacheaside.requests"
	getDurationName = "cacheaside.get.duration"
	getSpanName     = "cacheaside.get"
	attrResult      = "result"
)

// getResults are the values of the result attribute.
var getResults = []cacheaside.GetResult{
	cacheaside.ResultHit, cacheaside.ResultLocalHit, cacheaside.ResultMiss,
	cacheaside.ResultStale, cacheaside.ResultError,
}

// getBuckets are the Get histogram's bucket bounds in seconds: a hit
// takes well under a millisecond, a miss as long as a load.
var getBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// GetHook returns the function to pass to [cacheaside.WithGetHook]. For
// each Get it adds one to the counter cacheaside.requests ("{request}")
// and records the Get's latency in the histogram cacheaside.get.duration
// (seconds), both with the attribute result: hit (from Redis), local_hit
// (from the in-process cache), miss (loaded), stale (a value past its
// logical expiry) or error (any error but not found); see
// [cacheaside.GetResult]. The hit ratio is the share of hit and local_hit
// in cacheaside.requests.
//
// With [WithTracerProvider] each Get is also a span named cacheaside.get
// with the attribute result, its status Error on an error result. The hook
// runs when the Get has its answer, so the span is recorded afterwards
// with the Get's start and end times: it is a child of the caller's span,
// and the cacheaside.load span of a load the Get started is its sibling,
// not its child.
//
// [WithName] sets the cache attribute, as for [RegisterMetrics]. An error
// creating an instrument is reported through otel.Handle and the hook goes
// on without that instrument.
func GetHook(opts ...Option) func(ctx context.Context, result cacheaside.GetResult, took time.Duration) {
	cfg := newConfig(opts)
	meter := cfg.meters.Meter(ScopeName)
	requests, err := meter.Int64Counter(requestsName, metric.WithUnit("{request}"),
		metric.WithDescription("Gets, by how each was answered."))
	if err != nil {
		otel.Handle(err)
		requests = metricnoop.Int64Counter{}
	}
	hist, err := meter.Float64Histogram(getDurationName, metric.WithUnit("s"),
		metric.WithDescription("Duration of Gets, by how each was answered."),
		metric.WithExplicitBucketBoundaries(getBuckets...))
	if err != nil {
		otel.Handle(err)
		hist = metricnoop.Float64Histogram{}
	}
	addOpts := map[cacheaside.GetResult]metric.AddOption{}
	recOpts := map[cacheaside.GetResult]metric.RecordOption{}
	for _, r := range getResults {
		set := metric.WithAttributeSet(attributes(cfg.name, attribute.String(attrResult, string(r))))
		addOpts[r], recOpts[r] = set, set
	}
	var tracer trace.Tracer
	if cfg.tracers != nil {
		tracer = cfg.tracers.Tracer(ScopeName)
	}
	return func(ctx context.Context, result cacheaside.GetResult, took time.Duration) {
		add, rec := addOpts[result], recOpts[result]
		if add == nil { // a result this package does not know yet
			set := metric.WithAttributeSet(attributes(cfg.name, attribute.String(attrResult, string(result))))
			add, rec = set, set
		}
		requests.Add(ctx, 1, add)
		hist.Record(ctx, took.Seconds(), rec)
		if tracer != nil {
			recordGetSpan(ctx, tracer, cfg.name, result, took)
		}
	}
}

// recordGetSpan records the span of a Get that ended now after took.
func recordGetSpan(ctx context.Context, tracer trace.Tracer, name string, result cacheaside.GetResult, took time.Duration) {
	end := time.Now()
	attrs := []attribute.KeyValue{attribute.String(attrResult, string(result))}
	if name != "" {
		attrs = append(attrs, attribute.String(attrCache, name))
	}
	_, span := tracer.Start(ctx, getSpanName, trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithTimestamp(end.Add(-took)), trace.WithAttributes(attrs...))
	if result == cacheaside.ResultError {
		span.SetStatus(codes.Error, "get failed")
	}
	span.End(trace.WithTimestamp(end))
}
