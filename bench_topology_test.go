package cacheaside_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cacheaside/cacheaside"
	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// BenchmarkTopologyHit is the hit-path comparison of BenchmarkGetHit on
// each topology, through the client users have for it: a Get of a warm key
// (impl=cacheaside) against a GET and JSON decode of the same value on the
// same client (impl=raw), on a single server, a 3+3 Redis Cluster and a
// Sentinel-managed primary. scripts/bench.sh compares them with benchstat:
//
//	BENCH=TopologyHit scripts/bench.sh 10 1s
func BenchmarkTopologyHit(b *testing.B) {
	type topology struct {
		name   string
		client func(ctxTimeout bool) redis.UniversalClient
	}
	srv := redistest.Start(b)
	cl := redistest.StartCluster(b)
	sn := redistest.StartSentinel(b)
	topologies := []topology{
		{"single", func(ct bool) redis.UniversalClient {
			return redis.NewClient(&redis.Options{Addr: srv.Addr(), ContextTimeoutEnabled: ct})
		}},
		{"cluster", func(ct bool) redis.UniversalClient {
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), ContextTimeoutEnabled: ct})
		}},
		{"sentinel", func(ct bool) redis.UniversalClient {
			return redis.NewFailoverClient(&redis.FailoverOptions{
				MasterName: sn.MasterName(), SentinelAddrs: sn.SentinelAddrs(), ContextTimeoutEnabled: ct,
			})
		}},
	}
	for _, tp := range topologies {
		for _, ct := range []bool{false, true} {
			client := "client=default"
			if ct {
				client = "client=ctxtimeout"
			}
			prefix := "topology=" + tp.name + "/" + client + "/impl="
			b.Run(prefix+"cacheaside", func(b *testing.B) {
				rdb := tp.client(ct)
				defer rdb.Close()
				benchTopologyCache(b, rdb)
			})
			b.Run(prefix+"raw", func(b *testing.B) {
				rdb := tp.client(ct)
				defer rdb.Close()
				benchTopologyRaw(b, rdb)
			})
		}
	}
}

func benchTopologyCache(b *testing.B, rdb redis.UniversalClient) {
	cache, err := cacheaside.New(rdb, benchLoad, cacheaside.WithTTL(time.Hour))
	if err != nil {
		b.Fatal(err)
	}
	defer cache.Close()
	ctx := context.Background()
	for id := range int64(benchKeys) {
		if err := cache.Set(ctx, id, newBenchProduct(id)); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := next.Add(7919)
		for pb.Next() {
			id = (id + 1) % benchKeys
			p, err := cache.Get(ctx, id)
			if err != nil || p.ID != id {
				b.Errorf("Get(%d) = %v, %v", id, p.ID, err)
				return
			}
		}
	})
	b.StopTimer()
	if s := cache.Stats(); s.Loads != 0 || s.RedisErrors != 0 {
		b.Errorf("Loads = %d, RedisErrors = %d during a warm benchmark, want 0, 0", s.Loads, s.RedisErrors)
	}
}

func benchTopologyRaw(b *testing.B, rdb redis.UniversalClient) {
	ctx := context.Background()
	for id := range int64(benchKeys) {
		v, _ := json.Marshal(newBenchProduct(id))
		if err := rdb.Set(ctx, rawKey(id), v, time.Hour).Err(); err != nil {
			b.Fatal(err)
		}
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		id := next.Add(7919)
		for pb.Next() {
			id = (id + 1) % benchKeys
			raw, err := rdb.Get(ctx, rawKey(id)).Bytes()
			var p benchProduct
			if err == nil {
				err = json.Unmarshal(raw, &p)
			}
			if err != nil || p.ID != id {
				b.Errorf("GET %d = %v, %v", id, p.ID, err)
				return
			}
		}
	})
}
