package cacheotel

import (
	"context"
	"errors"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
)

// The names RedisHook records under, those of the OpenTelemetry database
// semantic conventions for the attributes.
const (
	redisDurationName = "cacheaside.redis.duration"
	attrOperation     = "db.operation.name"
	attrErrorType     = "error.type"
)

// redisBuckets are the Redis histogram's bucket bounds in seconds: from
// the 100 µs of a local round trip to the seconds of a frozen node.
var redisBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

// RedisHook returns a go-redis hook that records the latency of every
// command in the histogram cacheaside.redis.duration (seconds), with the
// attribute db.operation.name (the command in upper case, such as GET,
// EVALSHA or MGET; PIPELINE for a pipeline, recorded once) and, when the
// command failed, error.type: timeout, the first word of a Redis error
// reply (such as NOSCRIPT or WRONGTYPE), or _OTHER. A nil reply
// (redis.Nil, a miss) is no error. Install it on the client given to
// [cacheaside.New], before the first command:
//
//	rdb.AddHook(cacheotel.RedisHook(cacheotel.WithMeterProvider(mp)))
//
// The cache has no hook point of its own for Redis calls: the hook sees
// every command sent through the client, the cache's and any others. On a
// Cluster client it sees each command once, whatever node serves it. It
// does not see the commands of a cache built with
// [cacheaside.WithTimeoutClone], whose clone of the client drops hooks.
// [WithName] sets the cache attribute; leave it out for a client shared by
// several caches.
func RedisHook(opts ...Option) redis.Hook {
	cfg := newConfig(opts)
	hist, err := cfg.meters.Meter(ScopeName).Float64Histogram(redisDurationName, metric.WithUnit("s"),
		metric.WithDescription("Duration of Redis commands sent through the client."),
		metric.WithExplicitBucketBoundaries(redisBuckets...))
	if err != nil {
		otel.Handle(err)
		hist = metricnoop.Float64Histogram{}
	}
	return redisHook{hist: hist, name: cfg.name}
}

// redisHook implements redis.Hook.
type redisHook struct {
	hist metric.Float64Histogram
	name string
}

func (h redisHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h redisHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		h.record(ctx, start, strings.ToUpper(cmd.Name()), err)
		return err
	}
}

func (h redisHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		h.record(ctx, start, "PIPELINE", err)
		return err
	}
}

// record records one command that began at start and ended with err.
func (h redisHook) record(ctx context.Context, start time.Time, op string, err error) {
	took := time.Since(start).Seconds()
	attrs := []attribute.KeyValue{attribute.String(attrOperation, op)}
	if t := errorType(err); t != "" {
		attrs = append(attrs, attribute.String(attrErrorType, t))
	}
	h.hist.Record(ctx, took, metric.WithAttributeSet(attributes(h.name, attrs...)))
}

// errorType classifies the error of a command for the error.type
// attribute: "" for none (or a nil reply).
func errorType(err error) string {
	if err == nil || errors.Is(err, redis.Nil) {
		return ""
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return "timeout"
	}
	var re redis.Error
	if errors.As(err, &re) {
		msg := re.Error()
		if i := strings.IndexByte(msg, ' '); i > 0 {
			msg = msg[:i]
		}
		if msg != "" && msg == strings.ToUpper(msg) {
			return msg
		}
	}
	return "_OTHER"
}
