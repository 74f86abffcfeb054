package hq

import (
	"context"
	"database/sql"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"storepay/migrations"
)

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
	}
	return ports
}

// startCluster starts a hub per node, all at once (each waits for the
// others to place the commands stream). On any failure it closes those
// that started and returns the errors.
func startCluster(t *testing.T, dir string, nodes []string) ([]*Hub, []error) {
	ctx := context.Background()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ports := freePorts(t, len(nodes))
	hubs := make([]*Hub, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		db, err := OpenHubDB(ctx, filepath.Join(dir, n+".db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		var routes []string
		for j := range nodes {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[j]))
			}
		}
		hubs[i] = &Hub{DB: db, Config: HubConfig{LeafListen: "127.0.0.1:0", DataDir: filepath.Join(dir, n),
			Stores: []HubStore{{ID: "store-1", Password: "pw-1"}},
			Cluster: &HubCluster{Name: "storepayhq", Node: n, Listen: fmt.Sprintf("127.0.0.1:%d", ports[i]),
				Routes: routes, Nodes: nodes}}}
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = hubs[i].Open() }()
	}
	wg.Wait()
	failed := false
	for i, err := range errs {
		if err != nil {
			failed = true
			errs[i] = fmt.Errorf("%s: %w", nodes[i], err)
		}
	}
	if !failed {
		return hubs, nil
	}
	for i, h := range hubs {
		if errs[i] == nil {
			h.Close()
		}
	}
	return nil, errs
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 60 s", what)
		}
		time.Sleep(50 * time.Millisecond) // polling
	}
}

// TestHubCluster runs headquarters as a cluster of three nodes and a
// store linked to the first: every node keeps a complete view; a command
// sent at any node reaches the store and is known to every node; with
// the first node down, the store links to the second and commands still
// flow (the commands stream is replicated on the three).
func TestHubCluster(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	nodes := []string{"hq1", "hq2", "hq3"}
	// The route ports are picked free and bound a moment later: another
	// test process may take one in between, and a node then does not
	// start. Such an attempt is thrown away and made again on new ports.
	var hubs []*Hub
	for attempt := 1; hubs == nil; attempt++ {
		var errs []error
		hubs, errs = startCluster(t, filepath.Join(dir, fmt.Sprint(attempt)), nodes)
		if hubs != nil {
			break
		}
		if attempt == 3 {
			t.Fatalf("the cluster did not start in 3 attempts; last: %v", errs)
		}
		t.Logf("attempt %d: %v", attempt, errs)
	}
	closed := make([]bool, len(hubs))
	t.Cleanup(func() {
		for i, h := range hubs {
			if !closed[i] {
				h.Close()
			}
		}
	})

	sdb, err := migrations.Open(ctx, filepath.Join(dir, "store-1.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	if err := Enable(ctx, sdb, true); err != nil {
		t.Fatal(err)
	}
	link := &Link{DB: sdb, Config: LinkConfig{StoreID: "store-1", User: "store-1", Password: "pw-1",
		URLs:    []string{"nats-leaf://" + hubs[0].LeafAddr(), "nats-leaf://" + hubs[1].LeafAddr()},
		DataDir: filepath.Join(dir, "store-1")}}
	if err := link.Open(); err != nil {
		t.Fatal(err)
	}
	defer link.Close()

	write := func(n int) {
		for range n {
			if err := sdb.Update(ctx, func(tx *sql.Tx) error {
				_, err := tx.Exec(`INSERT INTO hq_outbox (type, body) VALUES ('device', json_object('id', 'dev', 'name', 'lane-1', 'role', 'terminal', 'state', 'active', 'at', '2026-12-06T05:00:00Z'))`)
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	written := func() int64 {
		var n int64
		sdb.Read().QueryRow(`SELECT seq FROM sqlite_sequence WHERE name = 'hq_outbox'`).Scan(&n)
		return n
	}
	complete := func(h *Hub) bool {
		var got, distinct int64
		h.DB.QueryRow(`SELECT count(*), count(DISTINCT seq) FROM events WHERE store_id = 'store-1'`).Scan(&got, &distinct)
		return got == written() && distinct == got
	}
	hotCard := func() bool {
		var n int
		sdb.Read().QueryRow(`SELECT count(*) FROM hot_cards WHERE entry = '5555554444'`).Scan(&n)
		return n == 1
	}
	write(10)
	for i, h := range hubs {
		eventually(t, nodes[i]+"'s view of store-1", func() bool { return complete(h) })
	}

	// A command at the second node reaches the store (linked to the
	// first) and every node knows it and its result.
	id, err := hubs[1].Send(ctx, "store-1", Command{Kind: KindHotCard, Card: "555555******4444", Action: ActionAdd, Reason: "stolen"}, "risk")
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the hot card at the store", hotCard)
	for i, h := range hubs {
		eventually(t, nodes[i]+" to know the command applied", func() bool {
			c, ok, err := h.CommandStatus(ctx, id)
			return err == nil && ok && c.State == "applied"
		})
	}

	// The first node goes down: the store links to the second, and a
	// command sent at the third still reaches it.
	hubs[0].Close()
	closed[0] = true
	id, err = hubs[2].Send(ctx, "store-1", Command{Kind: KindHotCard, Card: "555555******4444", Action: ActionRemove, Reason: "found"}, "risk")
	if err != nil {
		t.Fatalf("a command with one node down: %v", err)
	}
	eventually(t, "the hot card removed at the store", func() bool { return !hotCard() })
	write(5)
	for i, h := range hubs[1:] {
		eventually(t, nodes[i+1]+"'s view after the first node went down", func() bool {
			c, ok, err := h.CommandStatus(ctx, id)
			return complete(h) && err == nil && ok && c.State == "applied"
		})
	}
}
