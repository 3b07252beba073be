package main

import (
	"errors"
	"fmt"
	"time"
)

// Config is one run of the scenario. The zero value is not useful: start
// from defaultConfig, which the flags also use.
type Config struct {
	Instances   int           // cache instances per strategy
	Keys        int           // products, with Zipf popularity
	Rate        float64       // requests per second, per strategy
	Warm        time.Duration // warming phase, not in the summary
	Healthy     time.Duration // phases; each a whole number of seconds
	Outage      time.Duration
	Recovery    time.Duration
	DBLatency   time.Duration // simulated query latency (±25%)
	DBConns     int           // connections per database
	Deadline    time.Duration // per-request deadline
	RedisAddr   string        // an existing Redis to put a proxy in front of
	DatabaseURL string        // PostgreSQL instead of the simulated database
	Miniredis   bool          // use miniredis even when redis-server exists
	Seed        uint64        // seeds the key sequence
	Quiet       bool          // no live lines
}

func defaultConfig() Config {
	return Config{
		Instances: 4, Keys: 1000, Rate: 2000,
		Warm: 3 * time.Second, Healthy: 8 * time.Second, Outage: 6 * time.Second, Recovery: 8 * time.Second,
		DBLatency: 2 * time.Millisecond, DBConns: 20, Deadline: time.Second, Seed: 1,
	}
}

// zipfS is the exponent of the key popularity: a few products take most
// of the traffic, as in a real catalogue.
const zipfS = 1.1

// validate returns one error naming every bad setting.
func (c Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Instances < 1 {
		bad("-instances %d: want at least 1", c.Instances)
	}
	if c.Keys < 2 {
		bad("-keys %d: want at least 2", c.Keys)
	}
	if c.Rate <= 0 {
		bad("-rate %v: want a positive rate", c.Rate)
	}
	for _, p := range []struct {
		flag string
		d    time.Duration
		min  time.Duration
	}{{"-warm", c.Warm, 0}, {"-healthy", c.Healthy, time.Second}, {"-outage", c.Outage, time.Second}, {"-recovery", c.Recovery, time.Second}} {
		if p.d < p.min || p.d%time.Second != 0 {
			bad("%s %v: want a whole number of seconds, at least %v", p.flag, p.d, p.min)
		}
	}
	if c.DBLatency < 0 {
		bad("-db-latency %v: negative", c.DBLatency)
	}
	if c.DBConns < 1 {
		bad("-db-conns %d: want at least 1", c.DBConns)
	}
	if c.Deadline <= 0 {
		bad("-deadline %v: want a positive deadline", c.Deadline)
	}
	return errors.Join(errs...)
}

// maxInFlight caps the requests in flight per strategy: twice what the
// offered rate keeps in flight at the deadline, so that a strategy slowed
// to the deadline still gets all its load, but a hung one cannot exhaust
// memory. Requests over the cap are shed and count as errors.
func (c Config) maxInFlight() int64 {
	return max(256, int64(2*c.Rate*c.Deadline.Seconds()))
}

// The phases of the timeline.
const (
	phaseWarming  = "warming"
	phaseHealthy  = "healthy"
	phaseOutage   = "outage"
	phaseRecovery = "recovery"
)

// phaseOf returns the phase of second t of the run.
func (c Config) phaseOf(t int) string {
	w, h, o := secs(c.Warm), secs(c.Healthy), secs(c.Outage)
	switch {
	case t < w:
		return phaseWarming
	case t < w+h:
		return phaseHealthy
	case t < w+h+o:
		return phaseOutage
	}
	return phaseRecovery
}

func (c Config) total() int { return secs(c.Warm + c.Healthy + c.Outage + c.Recovery) }

func secs(d time.Duration) int { return int(d / time.Second) }
