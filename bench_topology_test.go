package cacheaside_test

import (
	"testing"

	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// BenchmarkTopologyHit is the hit-path comparison of BenchmarkGetHit on
// each topology, through the client users have for it, from 16 goroutines:
// a Get of a warm key (impl=cacheaside) against a GET and JSON decode of
// the same value on the same client (impl=raw), on a single server, a 3+3
// Redis Cluster and a Sentinel-managed primary. scripts/bench.sh compares them with benchstat:
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
		warm := tp.client(false)
		warmCache(b, warm)
		warmRaw(b, warm)
		_ = warm.Close()
		for _, ct := range []bool{false, true} {
			client := "client=default"
			if ct {
				client = "client=ctxtimeout"
			}
			prefix := "topology=" + tp.name + "/" + client + "/impl="
			b.Run(prefix+"cacheaside", func(b *testing.B) {
				rdb := tp.client(ct)
				defer rdb.Close()
				if s := benchHitCache(b, rdb, 16); s.RedisErrors != 0 {
					b.Errorf("RedisErrors = %d during a warm benchmark, want 0", s.RedisErrors)
				}
			})
			b.Run(prefix+"raw", func(b *testing.B) {
				rdb := tp.client(ct)
				defer rdb.Close()
				benchRaw(b, rdb, 16, false)
			})
		}
	}
}
