package main

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside/internal/testlog"
)

// slowRestart is a redisCtl whose kill and restart return only once the
// timeline has sampled the second after the one they began in, as on a
// busy machine (closing a server with connections in flight, starting a
// new redis-server): a timeline that waited for them would never get
// there, and they give up after stuck.
type slowRestart struct {
	redisCtl
	sampled *atomic.Int64 // the last second sampled
	killAt  int           // the second the kill begins in
	stuck   time.Duration
	timeout *atomic.Int64 // how many of kill and restart gave up waiting
}

// waitFor waits until second i has been sampled, or stuck has passed.
func (s slowRestart) waitFor(i int) {
	for end := time.Now().Add(s.stuck); s.sampled.Load() < int64(i); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			s.timeout.Add(1)
			return
		}
	}
}

func (s slowRestart) kill() error {
	s.waitFor(s.killAt + 1)
	return s.redisCtl.kill()
}

// restart begins in second killAt+1 (a 1s outage), or later if the kill
// took longer.
func (s slowRestart) restart(ctx context.Context) error {
	s.waitFor(int(s.sampled.Load()) + 2)
	return s.redisCtl.restart(ctx)
}

// TestSlowRestartKeepsTheTimeline kills Redis and restarts it slowly (see
// slowRestart), so that it answers after the run as planned would have
// ended. The seconds of the kill and the restart are sampled like any
// other (the sampling loop once waited for each, filed all their Gets
// under the first and left the others with none: with two test suites at
// once, "second 3 of the restart answered 462 requests on time and
// counted no Gets"; a kill or restart that waits for the loop's next
// samples would then wait in vain), and the recovery phase lasts its
// -recovery from the second Redis answered in (the run once ended as
// planned while the restart was still pending: a restart that took 3s
// left none of a 3s recovery). Each request's answer is counted in the
// second it ended in, with the request: a sampling loop that wakes late
// on a busy machine (load average 28) once left a second with on-time
// requests and no Gets.
func TestSlowRestartKeepsTheTimeline(t *testing.T) {
	testlog.Attach(t)
	var sampled, timeout atomic.Int64
	sampled.Store(-1)
	afterSample = func(i int) { sampled.Store(int64(i)) }
	const killAt = 2 // -warm 1s + -healthy 1s
	openRedisCtl = func(ctx context.Context, cfg Config) (redisCtl, error) {
		ctl, err := newRedisCtl(ctx, cfg)
		return slowRestart{redisCtl: ctl, sampled: &sampled, killAt: killAt, stuck: 20 * time.Second, timeout: &timeout}, err
	}
	t.Cleanup(func() { openRedisCtl, afterSample = newRedisCtl, nil })
	_, res := runMain(t, "-miniredis", "-warm", "1s", "-healthy", "1s", "-outage", "1s", "-recovery", "1s",
		"-rate", "300", "-keys", "100", "-quiet")
	if n := timeout.Load(); n != 0 {
		t.Errorf("%d of the kill and the restart waited %v for the timeline to sample the seconds after they began, in vain: the timeline waits for them", n, 20*time.Second)
	}
	if got := res.Params.WarmS + res.Params.HealthyS; got != killAt {
		t.Fatalf("kill at second %d, want %d", got, killAt)
	}
	restartAt := killAt + res.Params.OutageS
	answeredIn := int((float64(restartAt)*1000 + res.RestartMs) / 1000)
	if planned := restartAt + res.Params.RecoveryS; answeredIn < planned {
		t.Fatalf("Redis answered in second %d (RestartMs = %v), want at least %d: after the run as planned", answeredIn, res.RestartMs, planned)
	}
	for _, s := range res.Strategies {
		if got, want := len(s.Timeline), answeredIn+res.Params.RecoveryS; got < want {
			t.Errorf("%s: timeline of %d seconds, want at least %d (Redis answered in second %d, then %ds of recovery)", s.Name, got, want, answeredIn, res.Params.RecoveryS)
		}
		for _, sec := range s.Timeline[killAt:min(answeredIn+1, len(s.Timeline))] {
			// A second whose requests all ran late may count no Gets.
			if onTime := sec.Requests - sec.Errors; onTime > 50 && sec.Gets == 0 {
				t.Errorf("%s: second %d of the kill and restart answered %d requests on time and counted no Gets, want its own Gets", s.Name, sec.T, onTime)
			}
		}
	}
}
