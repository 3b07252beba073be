package protocol

import (
	"context"
	"errors"
	"time"

	"github.com/cacheaside/cacheaside/internal/redisguard"
	"github.com/redis/go-redis/v9"
)

// The fill protocol for a batch of keys, as GetMany and Warm run it: the
// same scripts and arguments as for one key, sent in one pipeline per
// node.

// Acquired is the outcome of Acquire for one key of a batch.
type Acquired struct {
	// Down is set when the key's node could not be reached (or its call
	// was not sent or is still running): load it without the lock and do
	// not write it.
	Down bool
	// Err is the key's own failure when its node answered (an error
	// reply, a reply that could not be parsed): leave the key to the
	// single-key path. Its lock, if the script took it, is given back.
	Err error
	// State, Raw and Lease are ParseAcquire's, when Down and Err are not
	// set.
	State State
	Raw   string
	Lease Lease
}

// AcquireBatch runs the Acquire script for the keys vkeys[i], i in idx, in
// one pipeline per node, in ModeForce where force[i] is set (force may be
// nil) and ModeNormal elsewhere. out[i] is key i's outcome, for i in idx.
func (lk *Locker) AcquireBatch(ctx context.Context, vkeys []string, force []bool, idx []int) (out []Acquired) {
	out = make([]Acquired, len(vkeys))
	if len(idx) == 0 {
		return out
	}
	tokens := make([]string, len(vkeys))
	cmds := make([]*redis.Cmd, len(vkeys))
	// A call the guard stopped waiting for may still take locks: give them
	// back (compare-and-delete, harmless where it took none).
	undo := func(sub []int) { lk.releaseNow(heldOf(sub, tokens, vkeys)) }
	args := func(i int) []any {
		if tokens[i] == "" {
			tokens[i] = lk.NewToken()
		}
		mode := ModeNormal
		if force != nil && force[i] {
			mode = ModeForce
		}
		return lk.params.AcquireArgs(tokens[i], mode, 0)
	}
	errOf, err := lk.guard.PerNode(ctx, vkeys, idx, func(ctx context.Context, sub []int) error {
		return lk.guard.PipelineScript(ctx, sub, scriptCall(ctx, Acquire, vkeys, args), cmds)
	}, undo)
	if err != nil {
		lk.failed(err)
	}
	var giveUp []Held
	for _, i := range idx {
		if errors.Is(errOf[i], redisguard.ErrIncomplete) {
			out[i].Down = true // not sent, or still running (undo runs when it ends)
			continue
		}
		if cmds[i] == nil || cmds[i].Err() != nil {
			// The call failed, but may have run on the server (a reply
			// lost to a timeout): give the lock back.
			if tokens[i] != "" {
				giveUp = append(giveUp, Held{tokens[i], vkeys[i]})
			}
			if cmds[i] == nil || redisguard.IsOutage(cmds[i].Err()) {
				out[i].Down = true
			} else {
				out[i].Err = cmds[i].Err()
			}
			continue
		}
		reply, _ := cmds[i].Slice()
		out[i].State, out[i].Raw, out[i].Lease, out[i].Err = ParseAcquire(reply, tokens[i])
	}
	lk.ReleaseAll(giveUp)
	return out
}

// heldOf returns the locks of the indexes idx that have a token.
func heldOf(idx []int, tokens, vkeys []string) []Held {
	var held []Held
	for _, i := range idx {
		if tokens[i] != "" {
			held = append(held, Held{tokens[i], vkeys[i]})
		}
	}
	return held
}

// BatchFill is one key's fill in FillBatch: Fill's arguments.
type BatchFill struct {
	VKey     string
	Lease    Lease
	Env      []byte
	PX       time.Duration
	Negative bool
}

// Filled is the outcome of one key's fill in FillBatch: Fill's results.
type Filled struct {
	Res FillResult
	Err error
}

// FillBatch runs the Fill script for fills, in one pipeline per node, and
// gives back the locks of the fills that failed (or were abandoned). out[j]
// is fills[j]'s outcome.
func (lk *Locker) FillBatch(ctx context.Context, fills []BatchFill) (out []Filled) {
	out = make([]Filled, len(fills))
	if len(fills) == 0 {
		return out
	}
	cmds := make([]*redis.Cmd, len(fills))
	vkeys := make([]string, len(fills))
	tokens := make([]string, len(fills))
	for j, f := range fills {
		vkeys[j], tokens[j] = f.VKey, f.Lease.Token
	}
	// A fill the guard stopped waiting for may never reach the server:
	// give its locks back (a fill that ran released them already).
	undo := func(sub []int) { lk.releaseNow(heldOf(sub, tokens, vkeys)) }
	args := func(j int) []any {
		f := fills[j]
		return FillArgs(f.Lease, f.Env, f.PX, f.Negative)
	}
	errOf, _ := lk.guard.PerNode(ctx, vkeys, nil, func(ctx context.Context, sub []int) error {
		return lk.guard.PipelineScript(ctx, sub, scriptCall(ctx, Fill, vkeys, args), cmds)
	}, undo)
	var giveUp []Held
	for j := range fills {
		var res int64
		err := errOf[j]
		if !errors.Is(err, redisguard.ErrIncomplete) && cmds[j] != nil {
			res, err = cmds[j].Int64()
		}
		if tokens[j] != "" && lockLeft(err) {
			giveUp = append(giveUp, Held{tokens[j], vkeys[j]})
		}
		out[j] = Filled{FillResult(res), err}
	}
	lk.ReleaseAll(giveUp)
	return out
}
