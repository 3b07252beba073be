package cacheaside

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"time"
)

// resolve derives the durations left unset and validates the whole config,
// returning one error that names every bad option.
func (c *config) resolve() error {
	errs := c.errs
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.ttl < time.Millisecond {
		bad("WithTTL: %v is under the minimum of 1ms", c.ttl)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"WithTTL", c.ttl}, {"WithNegativeTTL", c.negativeTTL}, {"WithFillLock: TTL", c.lockTTL},
		{"WithLoadTimeout", c.loadTimeout}, {"WithFillLock: Wait", c.lockWait}, {"WithRedisTimeout", c.redisTTL},
		{"WithL1: TTL", c.localTTL}, {"WithCircuitBreaker: Cooldown", c.breakerCooldown}, {"WithRestartCheck", c.restartCheck}} {
		if d.v > maxDuration {
			bad("%s: %v exceeds the maximum of %v", d.name, d.v, maxDuration)
		}
	}
	if c.jitter < 0 || c.jitter >= 1 || c.jitter != c.jitter {
		bad("WithJitter: %v is outside [0, 1)", c.jitter)
	}
	if c.negativeTTL < 0 || (c.negativeTTL > 0 && c.negativeTTL < time.Millisecond) {
		bad("WithNegativeTTL: %v must be 0 (disabled) or at least 1ms", c.negativeTTL)
	}
	if containsBrace(c.prefix) {
		bad("WithPrefix: %q contains '{' or '}', which Redis Cluster reads as a hash tag", c.prefix)
	}
	if c.redisTTL <= 0 {
		bad("WithRedisTimeout: %v must be positive", c.redisTTL)
	}
	if c.maxRefills < 0 {
		bad("WithMaxRefills: %d is negative", c.maxRefills)
	}
	if c.codec == nil || (reflect.ValueOf(c.codec).Kind() == reflect.Pointer && reflect.ValueOf(c.codec).IsNil()) {
		bad("WithCodec: nil codec")
	}

	if c.earlyBeta < 0 || c.earlyBeta != c.earlyBeta || math.IsInf(c.earlyBeta, 0) {
		bad("WithEarlyRefresh: beta %v must be a finite number ≥ 0", c.earlyBeta)
	}
	if c.maxStale < 0 || c.maxStale > maxDuration {
		bad("WithServeStale: MaxStale %v must be 0 (disabled) or positive, at most %v", c.maxStale, maxDuration)
	}
	if c.softTimeout < 0 {
		bad("WithServeStale: SoftTimeout %v is negative", c.softTimeout)
	}
	if c.softTimeout > 0 && c.maxStale == 0 {
		bad("WithServeStale: SoftTimeout needs MaxStale, or there is nothing to serve at the timeout")
	}
	if c.breakerFailures < 0 || uint64(c.breakerFailures) > math.MaxUint32 {
		bad("WithCircuitBreaker: Failures %d is outside [0, %d]", c.breakerFailures, uint64(math.MaxUint32))
	}
	if c.breakerFailures > 0 && c.breakerCooldown <= 0 {
		bad("WithCircuitBreaker: Cooldown %v must be positive", c.breakerCooldown)
	}
	if c.maxAbandoned < 1 {
		bad("WithMaxAbandoned: %d must be at least 1", c.maxAbandoned)
	}
	if c.maxLoads < 0 {
		bad("WithMaxConcurrentLoads: %d is negative", c.maxLoads)
	}
	if c.replicaAcks < 0 {
		bad("WithReplicaAcks: %d replicas is negative", c.replicaAcks)
	}
	if c.replicaAcks > 0 && (c.replicaWait <= 0 || c.replicaWait > maxDuration || c.replicaWait%time.Millisecond != 0) {
		bad("WithReplicaAcks: timeout %v must be a positive whole number of milliseconds, at most %v", c.replicaWait, maxDuration)
	}
	if c.syncSet && (c.syncWait <= 0 || c.syncWait > maxDuration) {
		bad("WithSyncInvalidation: timeout %v must be positive, at most %v", c.syncWait, maxDuration)
	}
	if c.localSize < 0 {
		bad("WithL1: Size %d is negative", c.localSize)
	}
	if c.localSize > 0 && c.localTTL < time.Millisecond {
		bad("WithL1: TTL %v is under the minimum of 1ms", c.localTTL)
	}
	if c.localFirstSet && c.localFirst && c.localSize == 0 {
		bad("WithLocalFirst: needs WithLocalCache")
	}
	if c.localPrefill && c.localSize == 0 {
		bad("WithLocalPrefill: needs WithLocalCache")
	}
	if c.localPrefill && c.warmKeys == nil && c.warmFunc == nil {
		bad("WithL1: Prefill needs warm-up keys (WithWarmupKeys or WithWarmup), or there is nothing to prefill")
	}
	if c.warmConcurrency < 1 {
		bad("WithWarmupConcurrency: %d must be at least 1", c.warmConcurrency)
	}
	if c.restartCheck < 0 {
		bad("WithRestartCheck: %v is negative", c.restartCheck)
	}

	if c.lockTTL < time.Millisecond {
		bad("WithFillLock: TTL %v is under the minimum of 1ms", c.lockTTL)
	}
	if c.loadTimeout < time.Millisecond {
		bad("WithLoadTimeout: %v is under the minimum of 1ms", c.loadTimeout)
	}
	return errors.Join(errs...)
}

func containsBrace(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '{' || s[i] == '}' {
			return true
		}
	}
	return false
}
