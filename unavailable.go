package cacheaside

import (
	"context"
	"errors"
	"fmt"

	"github.com/cacheaside/cacheaside/internal/redisguard"
)

// ErrRedisUnavailable is matched (with errors.Is) by every error of
// [Cache.Set], [Cache.Invalidate] and [Cache.Warm] that Redis being
// unavailable caused: a refused, reset or closed connection, a node that
// gave no reply within the Redis timeout (dead, frozen, blackholed), a
// call the circuit breaker skipped, or one past the bound of calls in
// flight. An error reply from a live server (such as OOM) does not match
// it, nor does the caller's own context ending. Get never returns it: it
// answers from the local cache or the loader instead.
var ErrRedisUnavailable = errors.New("cacheaside: redis unavailable")

// redisUnavailable returns err, the error of a Redis call, marked with
// ErrRedisUnavailable when it means Redis is unavailable. It is applied
// where Set, Invalidate and Warm return, and only to errors of Redis
// calls: a loader's connection error is not Redis's.
func redisUnavailable(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil || errors.Is(err, ErrRedisUnavailable) || errors.Is(err, ErrNotReplicated) {
		return err
	}
	var pe *PanicError
	if errors.As(err, &pe) || !(errors.Is(err, redisguard.ErrIncomplete) || redisguard.IsOutage(err)) {
		return err
	}
	return fmt.Errorf("%w: %w", ErrRedisUnavailable, err)
}
