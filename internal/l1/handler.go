package l1

import "time"

// Handler is what one member of a shared subscription is told. Its
// functions run one at a time, under the subscription's lock: they must be
// quick and must not call Join or leave.
type Handler struct {
	// OnSubscribed runs when the member's channel is subscribed: at Join
	// when it already is, and each time Redis confirms it after that.
	OnSubscribed func()
	// OnDrop runs each time the subscription of the member's channel ends
	// or fails to start.
	OnDrop func()
	// OnResumed runs instead of OnSubscribed when the channel is
	// subscribed again after a drop and every message sent meanwhile has
	// been handed to OnMessage from the channel's stream (feed.go): what
	// the member trusted before the drop may be trusted again.
	OnResumed func()
	// OnLease runs when the subscription renewed its lease (lease.go):
	// healthy reads may trust the L1 until until, not after. OnDrop ends
	// the lease.
	OnLease func(until time.Time)
	// OnMessage runs for each message on the member's channel.
	OnMessage func(payload string)
	// ReplyPrefix starts every reply key a message on the member's
	// channel may ask confirmations on (confirm.go): a message asking on
	// any other key is handed over but not confirmed, so that no message
	// makes the fleet write keys outside its prefix. "" confirms none.
	ReplyPrefix string
	// OnPanic, if not nil, is told of a panic in the subscription (it
	// dials a connection of its own through the client's hooks, and a hook
	// may panic), which is then taken for a dropped one.
	OnPanic func(p any)
}
