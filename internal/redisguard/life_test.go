package redisguard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TestJudge: what the guard makes of a call still running at a check,
// from its node's sign of life (life.go). Times are in milliseconds of
// clock; the budget is 100, the limit 3000 and the period 1000; the call
// began at 1000.
func TestJudge(t *testing.T) {
	const start = 1000
	type state struct {
		reply, prompt, fault int64 // the node's last reply, prompt reply and fault; 0: none
		slowest, at          int64 // the longest recent wait for a reply, and when; 0: none
		cold                 bool  // the node had not answered when the call began
		jammed               bool  // this process is congested
	}
	tests := []struct {
		name     string
		s        state
		due, now int64
		want     verdict
	}{
		{"first dial, nothing answered yet", state{cold: true}, 1100, 1100, waiting},
		{"first dial, another call answered promptly", state{reply: 1050, prompt: 1050, cold: true}, 1100, 1100, slow},
		{"first dial, answered long ago, still dialling", state{reply: 1010, cold: true}, 1500, 1500, waiting},
		{"another call answered promptly", state{reply: 1080, prompt: 1080}, 1100, 1101, slow},
		{"another call answered promptly in the last budget of a long wait", state{reply: 1450, prompt: 1450}, 1500, 1500, slow},
		{"another call answered, late: the node is slow", state{reply: 1080, prompt: 900}, 1100, 1101, silent},
		{"another call answered, late, this process congested", state{reply: 1080, prompt: 900, jammed: true}, 1100, 1101, slow},
		{"answered before the call only", state{reply: 990, prompt: 990}, 1100, 1101, silent},
		{"answered early in the wait, then quiet", state{reply: 1020, prompt: 1020}, 1200, 1201, silent},
		{"quiet, but the check ran late", state{reply: 990, prompt: 990}, 1100, 1160, waiting},
		{"quiet for a budget, this process congested", state{reply: 990, prompt: 990, jammed: true}, 1100, 1101, waiting},
		{"quiet for two budgets, this process congested", state{reply: 990, prompt: 990, jammed: true}, 1200, 1201, silent},
		{"quiet for two budgets, congested, replies lately took 300", state{reply: 990, slowest: 300, at: 900, jammed: true}, 1200, 1201, waiting},
		{"quiet for 300, congested, replies lately took 300", state{reply: 990, slowest: 300, at: 900, jammed: true}, 1300, 1301, silent},
		{"replies lately took 300, not congested", state{reply: 990, slowest: 300, at: 900}, 1100, 1101, silent},
		{"another call found the node failing since", state{reply: 1010, prompt: 1010, fault: 1050, cold: true}, 1100, 1100, silent},
		{"another call failed since, the call is past the first dial", state{reply: 1010, prompt: 1010, fault: 1050}, 1100, 1100, slow},
		{"a fault before a later reply", state{reply: 1060, prompt: 1060, fault: 1050, cold: true}, 1100, 1100, slow},
		{"a fault before the call began", state{reply: 990, prompt: 990, fault: 995}, 1100, 1100, silent},
		{"limit reached, the node answers", state{reply: 3950, prompt: 3950}, 4000, 4000, overdue},
		{"limit reached, never answered", state{cold: true}, 4000, 4000, silent},
	}
	ms := int64(time.Millisecond)
	for _, tt := range tests {
		l := life{lastReply: new(atomic.Int64)}
		l.lastReply.Store(tt.s.reply * ms)
		l.lastPrompt.Store(tt.s.prompt * ms)
		l.lastFault.Store(tt.s.fault * ms)
		l.slowest.Store(tt.s.slowest * ms)
		l.slowestAt.Store(tt.s.at * ms)
		w := watch{l: &l, start: start * ms, cold: tt.s.cold, budget: 100 * ms, limit: 3000 * ms, period: 1000 * ms,
			congested: func() bool { return tt.s.jammed }}
		if got := w.judge(tt.due*ms, tt.now*ms); got != tt.want {
			t.Errorf("%s: judge(due %d, now %d) = %v, want %v", tt.name, tt.due, tt.now, got, tt.want)
		}
	}
}

func (v verdict) String() string {
	return [...]string{"waiting", "slow", "silent", "overdue"}[v]
}

// TestCalm: calls to a node run with a hard deadline at the budget unless
// a call was slow lately, or one cut at the budget turned out slow.
func TestCalm(t *testing.T) {
	period := int64(time.Second)
	now := clock()
	tests := []struct {
		name               string
		slowAt, cut, reply int64 // 0: none; else how long before now
		want               bool
	}{
		{"nothing slow", 0, 0, 0, true},
		{"a slow call just now", 1, 0, 0, false},
		{"a slow call a period ago", period + 1, 0, 0, true},
		{"a cut, the node answered after it", 0, 10, 5, false},
		{"a cut, the node silent since (froze)", 0, 10, 20, true},
		{"a cut a period ago, answered after it", 0, period + 10, 5, true},
	}
	ago := func(d int64) int64 {
		if d == 0 {
			return 0
		}
		return now - d
	}
	for _, tt := range tests {
		g := Guard{calmAfter: time.Duration(period)}
		n := &Node{life: life{lastReply: new(atomic.Int64)}}
		g.slowAt.Store(ago(tt.slowAt))
		n.lastCut.Store(ago(tt.cut))
		n.lastReply.Store(ago(tt.reply))
		if got := g.calm(n); got != tt.want {
			t.Errorf("%s: calm() = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestIsReply(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, true},
		{"miss", redis.Nil, true},
		{"error reply", replyError("OOM command not allowed"), true},
		{"wrapped error reply", fmt.Errorf("acquire: %w", replyError("LOADING Redis is loading")), true},
		{"deadline", context.DeadlineExceeded, false},
		{"socket timeout", os.ErrDeadlineExceeded, false},
		{"closed", io.EOF, false},
		{"pool timeout", redis.ErrPoolTimeout, false},
		{"skipped", ErrSkipped, false},
	}
	for _, tt := range tests {
		if got := isReply(tt.err); got != tt.want {
			t.Errorf("isReply(%s: %v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
	if !IsTimeout(os.ErrDeadlineExceeded) || !IsTimeout(fmt.Errorf("read: %w", context.DeadlineExceeded)) || IsTimeout(io.EOF) {
		t.Errorf("isTimeout: a socket or context deadline is a timeout, EOF is not")
	}
	if errors.Is(ErrSlow, ErrIncomplete) || !errors.Is(errOverdue, ErrIncomplete) || !errors.Is(errSkippedSlow, ErrSkipped) {
		t.Errorf("ErrSlow must not wrap ErrIncomplete (the call ended); errOverdue must, errSkippedSlow must wrap ErrSkipped")
	}
}
