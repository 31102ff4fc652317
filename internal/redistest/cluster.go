package redistest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterTimeout bounds how long the three nodes may take to agree on one healthy cluster.
const clusterTimeout = 20 * time.Second

// slotRanges are the hash slots of the three masters, as redis-cli --cluster create splits them.
var slotRanges = [3][2]int{{0, 5460}, {5461, 10922}, {10923, 16383}}

// Cluster is a Redis Cluster of one test: three masters without replicas, each a Server of its
// own, killed when the test ends.
type Cluster struct {
	nodes [3]*Server
}

// StartCluster starts three cluster-enabled redis-server processes, gives them the slot ranges
// 0-5460, 5461-10922 and 10923-16383, joins them with CLUSTER MEET and waits until every node
// reports cluster_state:ok and all agree on who serves which slots. It fails the test if that
// does not happen within 20s, and skips it under -short.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	skipShort(t)
	var c Cluster
	for i := range c.nodes {
		c.nodes[i] = startServer(t, true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	clients := make([]*redis.Client, len(c.nodes))
	for i, n := range c.nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: n.Addr(), ContextTimeoutEnabled: true})
		defer clients[i].Close()
	}
	for i, cl := range clients {
		if err := cl.ClusterAddSlotsRange(ctx, slotRanges[i][0], slotRanges[i][1]).Err(); err != nil {
			t.Fatalf("redistest: CLUSTER ADDSLOTSRANGE on %s: %v", c.nodes[i].Addr(), err)
		}
	}
	for i := 1; i < len(c.nodes); i++ {
		// CLUSTER MEET ip port cluster-bus-port (Redis 7): the bus port is not port+10000 here.
		if err := clients[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", c.nodes[i].port, c.nodes[i].busPort).Err(); err != nil {
			t.Fatalf("redistest: CLUSTER MEET %s from %s: %v", c.nodes[i].Addr(), c.nodes[0].Addr(), err)
		}
	}
	if err := waitClusterOK(ctx, clients); err != nil {
		t.Fatalf("redistest: cluster did not become healthy within %v: %v", clusterTimeout, err)
	}
	return &c
}

// Addrs returns the addresses of the three masters, in slot order.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// Node returns the i-th master (0..2), serving slotRanges[i].
func (c *Cluster) Node(i int) *Server { return c.nodes[i] }

// Client returns a cluster client to the cluster, closed when the test ends.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs(), ContextTimeoutEnabled: true})
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// waitClusterOK polls every node until each reports cluster_state:ok with 3 known nodes and
// all 16384 slots assigned, and all nodes give the same slot map. On timeout it returns the last
// reason with each node's CLUSTER INFO.
func waitClusterOK(ctx context.Context, clients []*redis.Client) error {
	var reason string
	for {
		reason = clusterNotReady(ctx, clients)
		if reason == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s", reason)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// clusterNotReady says why the cluster is not ready yet, or returns "".
func clusterNotReady(ctx context.Context, clients []*redis.Client) string {
	var first string
	for i, cl := range clients {
		info, err := cl.ClusterInfo(ctx).Result()
		if err != nil {
			return fmt.Sprintf("node %d: CLUSTER INFO: %v", i, err)
		}
		for _, want := range []string{"cluster_state:ok", "cluster_known_nodes:3", "cluster_slots_assigned:16384"} {
			if !strings.Contains(info, want) {
				return fmt.Sprintf("node %d lacks %q in CLUSTER INFO:\n%s", i, want, info)
			}
		}
		m, err := slotMap(ctx, cl)
		if err != nil {
			return fmt.Sprintf("node %d: CLUSTER SLOTS: %v", i, err)
		}
		if i == 0 {
			first = m
		} else if m != first {
			return fmt.Sprintf("node %d sees slots %s, node 0 sees %s", i, m, first)
		}
	}
	return ""
}

// slotMap renders a node's view of the slot ranges and their masters, sorted.
func slotMap(ctx context.Context, cl *redis.Client) (string, error) {
	slots, err := cl.ClusterSlots(ctx).Result()
	if err != nil {
		return "", err
	}
	parts := make([]string, 0, len(slots))
	for _, s := range slots {
		if len(s.Nodes) == 0 {
			return "", fmt.Errorf("slots %d-%d have no node", s.Start, s.End)
		}
		parts = append(parts, fmt.Sprintf("%d-%d@%s", s.Start, s.End, s.Nodes[0].Addr))
	}
	slices.Sort(parts)
	return strings.Join(parts, ","), nil
}
