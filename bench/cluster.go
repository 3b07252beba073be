package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The Cluster measurement: the hit path of section 1 on a Redis Cluster of
// three primaries (no replicas), through a go-redis ClusterClient, raw GET
// against cacheaside without its L1. cacheaside batches the reads of
// concurrent Gets per node: a read round trip to a node is one GET, or one
// pipeline of MGETs (one per slot). A hook on each node's client counts
// those round trips and the keys they carry, the way
// TestClusterGetManyOneRoundTripPerNode (cluster_test.go) counts what each
// node receives.

// clusterPrimaries is the size of the cluster.
const clusterPrimaries = 3

// cluster is clusterPrimaries redis-server processes of our own that
// share the 16384 slots.
type cluster struct{ nodes []*server }

// startCluster launches the nodes, gives each a third of the slots, joins
// them and returns once every node reports the cluster ok.
func startCluster(ctx context.Context) (_ *cluster, err error) {
	c := &cluster{}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	for range clusterPrimaries {
		s, err := startServer(ctx, "--cluster-enabled", "yes", "--cluster-node-timeout", "5000")
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, s)
	}
	per := 16384 / clusterPrimaries
	for i, s := range c.nodes {
		lo, hi := i*per, (i+1)*per-1
		if i == clusterPrimaries-1 {
			hi = 16383
		}
		if err := nodeDo(ctx, s, "cluster", "addslotsrange", lo, hi); err != nil {
			return nil, fmt.Errorf("cluster addslotsrange on %s: %w", s.addr(), err)
		}
		if i > 0 {
			if err := nodeDo(ctx, c.nodes[0], "cluster", "meet", "127.0.0.1", s.port); err != nil {
				return nil, fmt.Errorf("cluster meet %s: %w", s.addr(), err)
			}
		}
	}
	return c, c.waitOK(ctx)
}

// nodeDo sends one command to node s on a client of its own.
func nodeDo(ctx context.Context, s *server, args ...any) error {
	rdb := redis.NewClient(&redis.Options{Addr: s.addr()})
	defer rdb.Close()
	return rdb.Do(ctx, args...).Err()
}

// waitOK waits until every node reports cluster_state:ok and knows every
// other node.
func (c *cluster) waitOK(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		ok := true
		for _, s := range c.nodes {
			rdb := redis.NewClient(&redis.Options{Addr: s.addr()})
			info, err := rdb.ClusterInfo(ctx).Result()
			_ = rdb.Close()
			if err != nil || !strings.Contains(info, "cluster_state:ok") ||
				!strings.Contains(info, fmt.Sprintf("cluster_known_nodes:%d", clusterPrimaries)) {
				ok = false
				break
			}
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster not ok: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *cluster) addrs() []string {
	var out []string
	for _, s := range c.nodes {
		out = append(out, s.addr())
	}
	return out
}

func (c *cluster) close() {
	for _, s := range c.nodes {
		_ = s.close()
	}
}

type clusterResult struct {
	client, name     string
	opsPerSec, ratio []float64 // per round; ratio to raw in the same round
	tripsPerOp       []float64 // read round trips (GET, or a pipeline of MGETs) per Get
	keysPerTrip      []float64
	nodes            int // nodes that served reads
	errs, loads      int64
	redisErrs        int64 // as hitResult's: -1 for the baseline
}

// readTrips counts the read round trips of a ClusterClient per node: a
// GET or MGET sent alone, or a pipeline holding any, is one.
type readTrips struct {
	mu    sync.Mutex
	nodes map[string]*nodeTrips
}

type nodeTrips struct{ trips, keys atomic.Int64 }

func countTrips(rdb *redis.ClusterClient) *readTrips {
	t := &readTrips{nodes: map[string]*nodeTrips{}}
	rdb.OnNewNode(func(node *redis.Client) {
		n := &nodeTrips{}
		t.mu.Lock()
		t.nodes[node.Options().Addr] = n
		t.mu.Unlock()
		node.AddHook(n)
	})
	return t
}

// total returns the round trips and keys counted so far, and how many
// nodes served any.
func (t *readTrips) total() (trips, keys int64, nodes int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, n := range t.nodes {
		if tr := n.trips.Load(); tr > 0 {
			trips, keys, nodes = trips+tr, keys+n.keys.Load(), nodes+1
		}
	}
	return trips, keys, nodes
}

// readKeys returns the keys cmd reads, or 0 when it is not a read.
func readKeys(cmd redis.Cmder) int64 {
	switch cmd.Name() {
	case "get":
		return 1
	case "mget":
		return int64(len(cmd.Args()) - 1)
	}
	return 0
}

func (*nodeTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (n *nodeTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if k := readKeys(cmd); k > 0 {
			n.trips.Add(1)
			n.keys.Add(k)
		}
		return next(ctx, cmd)
	}
}

func (n *nodeTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var keys int64
		for _, c := range cmds {
			keys += readKeys(c)
		}
		if keys > 0 {
			n.trips.Add(1)
			n.keys.Add(keys)
		}
		return next(ctx, cmds)
	}
}

// measureCluster measures the raw GET and cacheaside (no L1) on warm keys
// on a Redis Cluster, from the hit path's goroutines, round-robin like
// measureHit, on each client setup.
func (e *env) measureCluster(ctx context.Context) ([]clusterResult, error) {
	cl, err := startCluster(ctx)
	if err != nil {
		return nil, err
	}
	defer cl.close()
	e.progress("cluster of %d primaries on %s", clusterPrimaries, strings.Join(cl.addrs(), ", "))
	ids := make([]int64, e.cfg.keys)
	for i := range ids {
		ids[i] = int64(i)
	}
	names := []string{nameRaw, nameCacheasideNoL1}
	var (
		res      []clusterResult
		subjects []strategy
		trips    []*readTrips
		dbs      []*database
	)
	for _, cm := range clientModes {
		for ki, name := range names {
			o := cm.opts("")
			rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.addrs(), ContextTimeoutEnabled: o.ContextTimeoutEnabled})
			defer rdb.Close()
			t := countTrips(rdb)
			db := &database{}
			var s strategy = &raw{rdb: rdb, prefix: "c0:"}
			if ki == 1 {
				if s, err = openCacheaside(rdb, db, "c1:", false); err != nil {
					return nil, err
				}
				defer s.close()
			}
			if cm.name == clientModes[0].name { // the keys are shared by both clients
				if err := s.warm(ctx, ids); err != nil {
					return nil, fmt.Errorf("cluster %s: %w", name, err)
				}
			}
			res = append(res, clusterResult{client: cm.name, name: name})
			subjects, trips, dbs = append(subjects, s), append(trips, t), append(dbs, db)
		}
	}
	n := len(names)
	for i := range subjects { // fill each client's pool before measuring
		hammer(ctx, e.cfg.goroutines, min(e.cfg.duration, warmup)/2, false, nil, func(ctx context.Context, w int, j int64) bool {
			_, err := subjects[i].get(ctx, j%int64(e.cfg.keys))
			return err != nil
		})
	}
	loads0 := make([]int64, len(dbs))
	for i := range dbs {
		loads0[i] = dbs[i].calls.Load()
	}
	for r := range e.cfg.rounds {
		for ci := range clientModes {
			before := make([][2]int64, n)
			for ki := range n {
				t, k, _ := trips[ci*n+ki].total()
				before[ki] = [2]int64{t, k}
			}
			ws, err := e.hitRound(ctx, r, subjects[ci*n:(ci+1)*n])
			if err != nil {
				return nil, err
			}
			for ki, w := range ws {
				row := &res[ci*n+ki]
				t, k, nodes := trips[ci*n+ki].total()
				t, k = t-before[ki][0], k-before[ki][1]
				row.opsPerSec = append(row.opsPerSec, w.opsPerSec())
				row.ratio = append(row.ratio, w.opsPerSec()/ws[0].opsPerSec())
				row.tripsPerOp = append(row.tripsPerOp, float64(t)/float64(w.ops))
				row.keysPerTrip = append(row.keysPerTrip, float64(k)/float64(max(t, 1)))
				row.nodes = nodes
				row.errs += w.errs
				e.progress("cluster %-22s %-32s round %d: %.0f ops/s", clientModes[ci].name, names[ki], r+1, w.opsPerSec())
			}
		}
	}
	for i := range res {
		res[i].loads = dbs[i].calls.Load() - loads0[i]
		res[i].redisErrs = -1
		if f, ok := subjects[i].(interface{ redisErrors() int64 }); ok {
			res[i].redisErrs = f.redisErrors()
		}
	}
	return res, ctx.Err()
}
