package main

import "time"

// restart is Redis's restart, which runs on a goroutine of the timeline's
// while the seconds go on being sampled. Its fields other than done are
// set before done closes and read only after.
type restart struct {
	start    time.Time
	done     chan struct{}
	err      error
	at       time.Time // when the restarted Redis answered
	reported bool
}

// finished reports whether the restart has returned; false on nil.
func (rs *restart) finished() bool {
	if rs == nil {
		return false
	}
	select {
	case <-rs.done:
		return true
	default:
		return false
	}
}

// pending reports whether the restart has begun and justDone has not yet
// reported its end.
func (rs *restart) pending() bool { return rs != nil && !rs.reported }

// justDone reports, once, that the restart has returned.
func (rs *restart) justDone() bool {
	if !rs.finished() || rs.reported {
		return false
	}
	rs.reported = true
	return true
}

func (rs *restart) took() time.Duration { return rs.at.Sub(rs.start) }
