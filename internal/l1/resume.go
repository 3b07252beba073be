package l1

import (
	"context"
	"strings"
	"time"
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

// catchUpTimeout bounds the reads of a channel's stream on a
// (re)subscription.
const catchUpTimeout = 2 * time.Second

// resume runs when Redis confirms the subscription of channel. After a
// drop, when the ID of the last message received is known, it hands the
// members the messages sent since, read from the channel's stream, and
// tells them to trust their L1 again (OnResumed). Otherwise, or when the
// stream cannot tell what was missed, it records the stream's last ID as
// the new starting point and tells them to trust only what they read from
// now on (OnSubscribed).
func (s *Subscription) resume(ctx context.Context, channel string) {
	s.mu.Lock()
	after, known := s.last[channel]
	s.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, catchUpTimeout)
	defer cancel()
	if known {
		msgs, last, err := catchUp(cctx, s.client, channel, after)
		if err == nil {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.confirmed[channel] = true
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
			s.resumed.Add(1)
			s.replayed.Add(int64(len(msgs)))
			return
		}
	}
	start, ok, err := startID(cctx, s.client, channel)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil && ok && !s.legacy[channel] {
		s.last[channel] = start
	} else {
		delete(s.last, channel)
	}
	s.confirmed[channel] = true
	for _, m := range s.members[channel] {
		m.OnSubscribed()
	}
}
