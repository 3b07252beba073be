package cacheaside_test

import (
	"testing"

	"github.com/cacheaside/cacheaside/internal/l1"
	"github.com/cacheaside/cacheaside/internal/redistest"
)

// TestConfirmationOnlyUnderPrefix: a message on the invalidation channel
// that asks for confirmations on a key outside the channel's prefix (a
// crafted or corrupt message naming an application's list) is applied,
// but no subscriber pushes on that key or sets its TTL: a confirmation
// may only go to a reply key under "<prefix>ack:".
func TestConfirmationOnlyUnderPrefix(t *testing.T) {
	srv := redistest.Start(t)
	_, load := versioned()
	b := newCache(t, srv, load, localFirst...)
	waitSubscribed(t, srv, 1)
	ctx := testContext(t)
	rdb := srv.Client(t)
	if err := rdb.RPush(ctx, "jobs", "a", "b", "c").Err(); err != nil {
		t.Fatal(err)
	}
	const ch = "ca:invalidations"
	publish := func(reply string) {
		t.Helper()
		msg := l1.EncodeAsking("someone.", reply, []string{"ca:v:x"})
		if err := l1.Publish.Run(ctx, rdb, []string{ch}, l1.PublishArgs(ch, msg)...).Err(); err != nil {
			t.Fatalf("publish asking on %q: %v", reply, err)
		}
	}
	before := b.Stats().LocalInvalidations
	publish("jobs")
	publish("ca:ack:someone.1") // confirmed after the first, if at all
	waitFor(t, waitLimit, "B applies both messages and confirms the second", func() bool {
		return b.Stats().LocalInvalidations >= before+2 && srv.CLI(t, "EXISTS", "ca:ack:someone.1") == "1"
	})
	if n, ttl := srv.CLI(t, "LLEN", "jobs"), srv.CLI(t, "PTTL", "jobs"); n != "3" || ttl != "-1" {
		t.Errorf("after a message asking confirmations on \"jobs\": LLEN jobs = %s, PTTL jobs = %s; want 3 and -1 (untouched)", n, ttl)
	}
}
