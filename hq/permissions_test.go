package hq

import (
	"context"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"storepay/migrations"
)

// forger is a leaf node with store-1's valid credentials whose client
// tries what store-1 must not: reach store-2's JetStream, commands,
// acks and inboxes.
func forger(t *testing.T, leafAddr, user, password string) *nats.Conn {
	t.Helper()
	u, err := url.Parse("nats-leaf://" + leafAddr)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, password)
	srv, err := server.NewServer(&server.Options{ServerName: "forger", DontListen: true, NoSigs: true, NoLog: true,
		LeafNode: server.LeafNodeOpts{ReconnectInterval: 200 * time.Millisecond, Remotes: []*server.RemoteLeafOpts{{URLs: []*url.URL{u}}}}})
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("forger's server did not start")
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv), nats.CustomInboxPrefix(StoreInbox(user)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	deadline := time.Now().Add(10 * time.Second)
	for srv.NumLeafNodes() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("forger's leaf link did not come up")
		}
		time.Sleep(20 * time.Millisecond) // polling the link
	}
	return nc
}

// TestLeafPermissions: a store's leaf connection may only send and
// receive its own traffic. Each refusal is checked against an allowed
// message sent after it on the same path: once the allowed one arrived,
// the refused one would have too.
func TestLeafPermissions(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	hdb, err := OpenHubDB(ctx, filepath.Join(dir, "hq.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer hdb.Close()
	hub := &Hub{DB: hdb, Config: HubConfig{LeafListen: "127.0.0.1:0", DataDir: filepath.Join(dir, "hub"),
		Stores: []HubStore{{ID: "store-1", Password: "pw-1"}, {ID: "store-2", Password: "pw-2"}}}}
	if err := hub.Open(); err != nil {
		t.Fatal(err)
	}
	defer hub.Close()

	// store-2 is a real store link, with its stream and its consumer.
	sdb, err := migrations.Open(ctx, filepath.Join(dir, "store-2.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	store2 := &Link{DB: sdb, Config: LinkConfig{StoreID: "store-2", URLs: []string{"nats-leaf://" + hub.LeafAddr()},
		User: "store-2", Password: "pw-2", DataDir: filepath.Join(dir, "store-2")}}
	if err := store2.Open(); err != nil {
		t.Fatal(err)
	}
	defer store2.Close()

	nc := forger(t, hub.LeafAddr(), "store-1", "pw-1")
	hc, err := hub.connect(hub.srv, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()

	// Requests: store-1's own command consumer answers (not found is an
	// answer); store-2's consumer, store-2's JetStream and the hub's
	// stream API are out of reach.
	ask := func(subject string) error {
		_, err := nc.Request(subject, []byte(`{}`), 3*time.Second)
		return err
	}
	// Positive controls first, retried while the links and their
	// interest come up: headquarters reaches store-2's JetStream, and
	// store-1 its own command consumer. After them, a request that gets
	// no answer is refused, not early.
	until := func(what string, try func() error) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			err := try()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", what, err)
			}
			time.Sleep(50 * time.Millisecond) // polling the links
		}
	}
	as2, err := hub.connect(hub.srv, "test-store-2", nats.CustomInboxPrefix(HubInbox("store-2")))
	if err != nil {
		t.Fatal(err)
	}
	defer as2.Close()
	until("headquarters reaches store-2's stream", func() error {
		_, err := as2.Request("$JS.store-2.API.STREAM.INFO."+EventsStream, []byte(`{}`), 3*time.Second)
		return err
	})
	until("store-1's own consumer info", func() error {
		return ask("$JS.hq.API.CONSUMER.INFO." + CommandsStream + "." + StoreConsumer("store-1"))
	})
	for _, subject := range []string{
		"$JS.hq.API.CONSUMER.INFO." + CommandsStream + "." + StoreConsumer("store-2"),
		"$JS.store-2.API.STREAM.INFO." + EventsStream,
		"$JS.store-2.API.STREAM.DELETE." + EventsStream,
		"$JS.hq.API.STREAM.INFO." + CommandsStream,
		"$JS.hq.API.STREAM.PURGE." + CommandsStream,
	} {
		if err := ask(subject); err == nil {
			t.Errorf("store-1 got an answer on %s", subject)
		}
	}
	if _, err := store2.StreamMessages(ctx); err != nil {
		t.Fatalf("store-2's stream after the attempts: %v", err)
	}

	// Publishes: headquarters hears store-1 on store-1's inbox, not on
	// store-2's, another store's acks or the event subjects.
	got := make(chan string, 16)
	for _, s := range []string{HubInbox("store-1") + ".>", HubInbox("store-2") + ".>", "$JS.ACK.>", "storepay.>"} {
		sub, err := hc.Subscribe(s, func(m *nats.Msg) { got <- m.Subject })
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}
	hc.Flush()
	waitInterest := func(c *nats.Conn, subject string) {
		t.Helper()
		// The hub's interest reaches the forger's server asynchronously:
		// publish probes until one arrives.
		deadline := time.Now().Add(10 * time.Second)
		for {
			c.Publish(subject, nil)
			select {
			case s := <-got:
				if s == subject {
					return
				}
			case <-time.After(50 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s never arrived", subject)
			}
		}
	}
	waitInterest(nc, HubInbox("store-1")+".ready")
	for _, s := range []string{HubInbox("store-2") + ".x", "$JS.ACK." + CommandsStream + "." + StoreConsumer("store-2") + ".1.1.1.1.1",
		"$JS.ACK." + EventsStream + "." + HubConsumer("store-2", "") + ".1.1.1.1.1", EventSubject("store-2", "payment"), ChainSubject} {
		nc.Publish(s, nil)
	}
	nc.Publish(HubInbox("store-1")+".last", nil)
	nc.Flush()
	for s := range got {
		if s == HubInbox("store-1")+".last" {
			break
		}
		t.Errorf("headquarters received store-1's %s", s)
	}

	// Subscriptions: store-1 hears its own inbox, not store-2's, not
	// store-2's acks or command subjects.
	heard := make(chan string, 16)
	for _, s := range []string{StoreInbox("store-1") + ".>", StoreInbox("store-2") + ".>", "$JS.ACK.>", "storepay.cmd.>", "$JS.store-2.API.>"} {
		sub, err := nc.Subscribe(s, func(m *nats.Msg) { heard <- m.Subject })
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Unsubscribe()
	}
	nc.Flush()
	deadline := time.Now().Add(10 * time.Second)
	for ready := false; !ready; {
		hc.Publish(StoreInbox("store-1")+".ready", nil)
		select {
		case s := <-heard:
			ready = s == StoreInbox("store-1")+".ready"
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("store-1 never heard its own inbox")
		}
	}
	for _, s := range []string{StoreInbox("store-2") + ".x", "$JS.ACK." + EventsStream + "." + HubConsumer("store-2", "") + ".1.1.1.1.1",
		CommandSubject("store-2"), "$JS.store-2.API.STREAM.INFO." + EventsStream} {
		hc.Publish(s, nil)
	}
	hc.Publish(StoreInbox("store-1")+".last", nil)
	hc.Flush()
	for s := range heard {
		if s == StoreInbox("store-1")+".last" {
			break
		}
		if s != StoreInbox("store-1")+".ready" {
			t.Errorf("store-1 heard %s", s)
		}
	}
}
