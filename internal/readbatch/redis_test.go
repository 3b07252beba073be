package readbatch

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// redisQueue returns a queue over rdb: GET for a lone key, MGET for a
// batch.
func redisQueue(rdb *redis.Client, max int) *Queue {
	return New(func(ctx context.Context, key string) ([]byte, error) {
		v, err := rdb.Get(ctx, key).Bytes()
		if errors.Is(err, redis.Nil) {
			return nil, nil
		}
		return v, err
	}, func(ctx context.Context, keys []string, vals [][]byte) error {
		res, err := rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return err
		}
		for i, v := range res {
			if s, ok := v.(string); ok {
				vals[i] = []byte(s)
			}
		}
		return nil
	}, max, nil)
}

// TestRedisBatches reads keys of a real Redis from 32 goroutines: every
// caller gets its own key's value (or nil for a missing key), and the
// server sees one command per round trip the queue counts, far fewer than
// reads.
func TestRedisBatches(t *testing.T) {
	srv := redistest.Start(t)
	rdb := srv.Client(t)
	ctx := context.Background()
	const keys = 1000
	for i := range keys {
		if i%10 != 0 { // every tenth key is missing
			if err := rdb.Set(ctx, "k"+strconv.Itoa(i), "v"+strconv.Itoa(i), 0).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	srv.CLI(t, "CONFIG", "RESETSTAT")
	q := redisQueue(rdb, 64)
	const goroutines, each = 32, 200
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for n := range each {
				i := (g*7919 + n*31) % keys
				v, err := q.Get(ctx, "k"+strconv.Itoa(i))
				want := "v" + strconv.Itoa(i)
				if i%10 == 0 {
					want = ""
				}
				if err != nil || string(v) != want || (want == "") != (v == nil) {
					t.Errorf("Get(k%d) = %q, %v, want %q", i, v, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
	s := q.Stats()
	gets, mgets := commandCalls(t, srv, "get"), commandCalls(t, srv, "mget")
	if gets+mgets != int64(s.Lone+s.Batches) {
		t.Errorf("server ran %d GET + %d MGET, want %d (lone reads + batches)", gets, mgets, s.Lone+s.Batches)
	}
	if s.Lone+s.Batched != goroutines*each {
		t.Errorf("Stats() = %+v: %d keys read, want %d", s, s.Lone+s.Batched, goroutines*each)
	}
	if mgets == 0 || s.Batched < 2*s.Batches {
		t.Errorf("Stats() = %+v, %d MGETs: 32 goroutines hardly shared round trips", s, mgets)
	}
	t.Logf("%d reads in %d round trips (%d lone, %d batches of %.1f keys on average)",
		goroutines*each, s.Lone+s.Batches, s.Lone, s.Batches, float64(s.Batched)/float64(max(s.Batches, 1)))
}

// commandCalls returns how many times the server ran cmd since the last
// CONFIG RESETSTAT.
func commandCalls(t *testing.T, srv *redistest.Server, cmd string) int64 {
	for line := range strings.SplitSeq(srv.CLI(t, "INFO", "commandstats"), "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_"+cmd+":calls=")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
		if err != nil {
			t.Fatal(fmt.Errorf("INFO commandstats: %w", err))
		}
		return n
	}
	return 0
}
