package cacheaside_test

import (
	"sync"
	"testing"

	"github.com/cacheaside/cacheaside/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// BenchmarkTopologyHit is the hit-path comparison of BenchmarkGetHit on
// each topology, through the client users have for it, from 16 goroutines:
// a Get of a warm key (impl=cacheaside) against a GET and JSON decode of
// the same value on the same client (impl=raw), on a single server, a 3+3
// Redis Cluster and a Sentinel-managed primary. impl=cacheaside also
// reports the round trips of its reads per Get (reads/op: a GET, or on a
// Cluster one pipeline of per-slot MGETs to one node) and the keys each
// read carried (keys/read): the batching of concurrent reads, per node.
// scripts/bench.sh compares them with benchstat:
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
				reads := countReads(rdb, cl)
				if s := benchHitCache(b, rdb, 16); s.RedisErrors != 0 {
					b.Errorf("RedisErrors = %d during a warm benchmark, want 0", s.RedisErrors)
				}
				reads.report(b)
			})
			b.Run(prefix+"raw", func(b *testing.B) {
				rdb := tp.client(ct)
				defer rdb.Close()
				benchRaw(b, rdb, 16, false)
			})
		}
	}
}

// topologyReads counts the read round trips a client sends, per node.
type topologyReads struct {
	mu      sync.Mutex
	perNode map[string]*readCounter
}

// countReads installs a readCounter on every node rdb talks to: each
// Cluster node as the client meets it (keys checked against cl's slots),
// or the one client of any other topology.
func countReads(rdb redis.UniversalClient, cl *redistest.Cluster) *topologyReads {
	r := &topologyReads{perNode: map[string]*readCounter{}}
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		c.OnNewNode(func(node *redis.Client) {
			h := &readCounter{cl: cl}
			r.mu.Lock()
			r.perNode[node.Options().Addr] = h
			r.mu.Unlock()
			node.AddHook(roundTrips(h.count))
		})
	default:
		h := &readCounter{}
		r.perNode[""] = h
		rdb.AddHook(roundTrips(h.count))
	}
	return r
}

// report reports the read round trips per op, the keys per read and the
// nodes that served reads, and fails b if a read mixed the keys of several slots in one MGET.
func (r *topologyReads) report(b *testing.B) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var trips, keys, nodes int64
	for addr, h := range r.perNode {
		trips += h.roundTrips.Load()
		keys += h.keys.Load()
		if h.roundTrips.Load() > 0 {
			nodes++
		}
		if n := h.mixedSlots.Load(); n != 0 {
			b.Errorf("node %s: %d MGETs read keys of more than one slot", addr, n)
		}
	}
	if trips == 0 {
		b.Fatal("no read reached a node")
	}
	b.ReportMetric(float64(trips)/float64(b.N), "reads/op")
	b.ReportMetric(float64(keys)/float64(trips), "keys/read")
	b.ReportMetric(float64(nodes), "read-nodes")
}
