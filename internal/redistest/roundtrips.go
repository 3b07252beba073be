package redistest

import (
	"context"

	"github.com/redis/go-redis/v9"
)

// RoundTrips is a go-redis hook that calls its function with the commands
// of each round trip a client makes: one command, or one pipeline. Tests
// count round trips with it (client.AddHook(RoundTrips(f))).
type RoundTrips func(cmds []redis.Cmder)

func (f RoundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (f RoundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		f([]redis.Cmder{cmd})
		return next(ctx, cmd)
	}
}

func (f RoundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		f(cmds)
		return next(ctx, cmds)
	}
}
