package redisguard

import (
	"os"
	"time"
)

// A reply counts only once the goroutine reading it runs, and a goroutine
// woken by the network waits for the runtime's network poller and then at
// the back of the run queue, while the guard's check, woken by its timer,
// runs at once. A few CPU-bound goroutines (fewer than busy counts), a
// garbage collection, or other processes on the machine can hold a reply's
// reader for longer than the budget: the check then finds no reply and
// would judge a node silent that answered (docs/testing.md, "replies
// unread under CPU starvation"). So before a silence or a cut call is
// judged a failure, the guard measures how long a goroutine woken the way
// the readers are takes to run now: it parks on a pipe that a goroutine of
// its own writes to. A quarter budget or more (the lateness that already
// excuses a check that ran late) means the replies may be waiting too, and
// the call is not judged; on an idle machine the round trip takes
// microseconds, so a frozen Redis is still found at the budget.

// lagging reports whether a goroutine woken by the network poller now
// waits a quarter budget or more to run. It waits at most that long.
func (g *Guard) lagging() bool {
	limit := g.budget / 4
	r, w, err := os.Pipe()
	if err != nil {
		return false // no evidence either way: judge as before
	}
	defer r.Close()
	defer w.Close()
	start := time.Now()
	if err := r.SetReadDeadline(start.Add(limit)); err != nil {
		return false // not pollable here: the round trip would not measure it
	}
	go func() { _, _ = w.Write([]byte{0}) }() // ends at once: the pipe has room
	var b [1]byte
	if _, err := r.Read(b[:]); err != nil {
		return true // no wake within the limit
	}
	return time.Since(start) >= limit
}
