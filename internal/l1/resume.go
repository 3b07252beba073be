package l1

import (
	"context"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The subscription's side of the feed (feed.go): it records the stream ID
// each delivered message carries, and on each (re)subscription of a
// channel it hands the members what they missed and tells them whether
// they may trust their L1 again.

// deliver hands a message to the members of its channel, without the
// stream ID it carries, which it records, and then confirms it when it
// asks for a confirmation (confirm.go).
func (s *Subscription) deliver(channel, payload string) {
	if reply := s.deliverLocked(channel, payload); reply != "" {
		s.ask(reply)
	}
}

// deliverLocked is deliver under the subscription's lock; it returns the
// reply key the message asks a confirmation on, or "".
func (s *Subscription) deliverLocked(channel, payload string) (reply string) {
	id, msg, ok := Unwrap(payload)
	if !ok {
		msg = payload // unreadable: the members distrust their L1
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sid, hasID := parseID(id)
	switch {
	case ok && id == "":
		// From a publisher that writes no stream entry (an earlier
		// version): the stream cannot tell what this channel missed.
		s.legacy[channel] = true
		delete(s.last, channel)
	case hasID && len(s.members[channel]) > 0 && !s.legacy[channel]:
		// Every message after this one is received or, after a drop,
		// in the stream after it: a starting point when none is known.
		if last, known := s.last[channel]; !known || last.less(sid) {
			s.last[channel] = sid
		}
	}
	for _, m := range s.members[channel] {
		m.OnMessage(msg)
	}
	if !ok {
		return ""
	}
	return s.allowedReply(channel, askedReply(msg))
}

// allowedReply returns reply if it starts with the ReplyPrefix of a
// member of channel, else "" (under the subscription's lock).
func (s *Subscription) allowedReply(channel, reply string) string {
	if reply == "" {
		return ""
	}
	for _, m := range s.members[channel] {
		if m.ReplyPrefix != "" && strings.HasPrefix(reply, m.ReplyPrefix) {
			return reply
		}
	}
	return ""
}

// catchUpTimeout bounds the reads of the channels' streams on a
// (re)subscription.
const catchUpTimeout = 2 * time.Second

// A SUBSCRIBE names many channels (one per Cache prefix), and Redis
// subscribes them all before it confirms the first: from that first
// confirmation on, every message on any of them is received. So the
// channels of one SUBSCRIBE are resumed together, at its first
// confirmation, with one round trip for all their streams (readStreams),
// not one per channel. A psConn records the channels of each SUBSCRIBE it
// sent (sent), and for each channel the SUBSCRIBEs whose confirmation of
// it is still to come (pending), in the order Redis confirms them.

// sentSubscribe records a SUBSCRIBE of chans on c (under s.mu).
func (c *psConn) sentSubscribe(chans []string) {
	b := len(c.sent)
	c.sent = append(c.sent, subscribeCmd{chans: chans})
	if c.pending == nil {
		c.pending = map[string][]int{}
	}
	for _, ch := range chans {
		c.pending[ch] = append(c.pending[ch], b)
	}
}

// subscribeCmd is one SUBSCRIBE sent on a connection.
type subscribeCmd struct {
	chans   []string
	resumed bool // its channels were resumed at its first confirmation
}

// confirmedOn handles Redis's confirmation of channel on ps: at the first
// confirmation of a SUBSCRIBE, it resumes all that SUBSCRIBE's channels.
func (s *Subscription) confirmedOn(ctx context.Context, ps *redis.PubSub, channel string) {
	s.mu.Lock()
	c := s.conn
	if c == nil || c.ps != ps || len(c.pending[channel]) == 0 {
		s.mu.Unlock()
		s.resume(ctx, []string{channel}) // not recorded: resume it alone
		return
	}
	b := c.pending[channel][0]
	c.pending[channel] = c.pending[channel][1:]
	cmd := &c.sent[b]
	if cmd.resumed {
		s.mu.Unlock()
		return
	}
	cmd.resumed = true
	chans := cmd.chans
	s.mu.Unlock()
	s.resume(ctx, chans)
}

// resume runs when Redis confirms the subscription of channels. For each
// channel, after a drop, when the ID of the last message received is
// known, it hands the members the messages sent since, read from the
// channel's stream, and tells them to trust their L1 again (OnResumed).
// Otherwise, or when the stream cannot tell what was missed, it records
// the stream's last ID as the new starting point and tells them to trust
// only what they read from now on (OnSubscribed). All the streams are
// read in one round trip.
func (s *Subscription) resume(ctx context.Context, channels []string) {
	after := make(map[string]streamID, len(channels))
	s.mu.Lock()
	for _, ch := range channels {
		if id, known := s.last[ch]; known {
			after[ch] = id
		}
	}
	s.registered = true // from the first try: a partial renewal may have landed
	s.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
	defer cancel()
	sent := time.Now()
	reads, renewed := readStreams(cctx, s.client, channels, after, s.id)
	s.mu.Lock()
	defer s.mu.Unlock()
	var until time.Time // the lease's end for the members (lease.go); zero: none yet
	if renewed {
		// Every message published before the renewal landed is in the
		// stream read after it, and handed over below (or, when the
		// stream cannot tell, the members trust only reads from now on,
		// which see those messages' writes): the first lease needs no
		// PONG.
		until = sent.Add(LeaseTTL - leaseMargin)
	}
	for _, ch := range channels {
		s.resumeOne(ch, reads[ch], until)
	}
}

// resumeOne is resume for one channel whose stream r read (under s.mu),
// and then leases its members until until, unless it is zero.
func (s *Subscription) resumeOne(channel string, r *streamRead, until time.Time) {
	defer s.leaseMembers(channel, until)
	s.confirmed[channel] = true
	if r.rng != nil {
		if msgs, last, err := r.missed(); err == nil {
			if cur, ok := s.last[channel]; ok && cur.less(last) {
				s.last[channel] = last
			}
			for _, m := range s.members[channel] {
				for _, msg := range msgs {
					m.OnMessage(msg)
				}
				if m.OnResumed != nil {
					m.OnResumed()
				} else {
					m.OnSubscribed()
				}
			}
			// Every member has them: confirm those that ask, so that a
			// publisher that waited for this subscription (its lease
			// held while it missed them) is answered.
			for _, msg := range msgs {
				if reply := s.allowedReply(channel, askedReply(msg)); reply != "" {
					s.ask(reply)
				}
			}
			s.resumed.Add(1)
			s.replayed.Add(int64(len(msgs)))
			return
		}
	}
	if start, ok, err := r.start(); err == nil && ok && !s.legacy[channel] {
		s.last[channel] = start
	} else {
		delete(s.last, channel)
	}
	for _, m := range s.members[channel] {
		m.OnSubscribed()
	}
}
