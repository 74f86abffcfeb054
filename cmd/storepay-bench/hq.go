package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"storepay/hq"
)

func init() { benches["hq"] = benchHQ }

// benchHQ measures headquarters' ingest: simulated stores (each an
// embedded leaf node with its own JetStream stream, as storepay runs it,
// publishing events at a fixed rate without the SQLite outbox in front)
// into one hub; then a share of them is cut off and the catch-up after
// the link returns is timed.
func benchHQ(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("hq", flag.ContinueOnError)
	fs.SetOutput(stderr)
	stores := fs.Int("stores", 20, "simulated stores (each runs a NATS server with JetStream)")
	rate := fs.Float64("rate", 2, "payments per second per store (3 events each)")
	steady := fs.Duration("steady", 10*time.Second, "steady-state window")
	cut := fs.Int("cut", 4, "stores cut off from headquarters")
	outage := fs.Duration("outage", 20*time.Second, "how long they stay cut off")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "storepay-hqbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	hc := hq.HubConfig{LeafListen: "127.0.0.1:0", DataDir: filepath.Join(dir, "hub")}
	for i := 0; i < *stores; i++ {
		hc.Stores = append(hc.Stores, hq.HubStore{ID: fmt.Sprintf("s%04d", i), Password: "pw"})
	}
	db, err := hq.OpenHubDB(ctx, filepath.Join(dir, "hq.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	hub := &hq.Hub{Config: hc, DB: db, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := hub.Open(); err != nil {
		return err
	}
	defer hub.Close()
	type sim struct {
		id    string
		srv   *server.Server
		js    jetstream.JetStream
		nc    *nats.Conn
		proxy *benchProxy
	}
	sims := make([]*sim, *stores)
	for i := range sims {
		id := hc.Stores[i].ID
		p, err := newBenchProxy(hub.LeafAddr())
		if err != nil {
			return err
		}
		defer p.close()
		u, _ := url.Parse("nats-leaf://" + id + ":pw@" + p.ln.Addr().String())
		srv, err := server.NewServer(&server.Options{ServerName: id, DontListen: true, JetStream: true, JetStreamDomain: id,
			StoreDir: filepath.Join(dir, id), NoSigs: true, NoLog: true,
			LeafNode: server.LeafNodeOpts{ReconnectInterval: 500 * time.Millisecond, Remotes: []*server.RemoteLeafOpts{{URLs: []*url.URL{u}}}}})
		if err != nil {
			return err
		}
		srv.Start()
		if !srv.ReadyForConnections(30 * time.Second) {
			return fmt.Errorf("store %s did not start", id)
		}
		defer srv.Shutdown()
		nc, err := nats.Connect("", nats.InProcessServer(srv))
		if err != nil {
			return err
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		if _, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: hq.EventsStream,
			Subjects: []string{"storepay.evt." + id + ".>"}, Storage: jetstream.FileStorage, Duplicates: time.Hour}); err != nil {
			return err
		}
		sims[i] = &sim{id: id, srv: srv, js: js, nc: nc, proxy: p}
	}
	var published atomic.Int64
	pctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	every := time.Duration(float64(time.Second) / *rate)
	for _, s := range sims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(every)
			defer t.Stop()
			var seq int64
			for {
				select {
				case <-pctx.Done():
					return
				case <-t.C:
				}
				for _, typ := range []string{"payment", "payment", "saf"} {
					seq++
					id := fmt.Sprintf("%s-%d", s.id, seq)
					b, _ := json.Marshal(hq.Event{ID: id, StoreID: s.id, Seq: seq, Type: typ, At: time.Now().UTC().Format(time.RFC3339Nano),
						Data: json.RawMessage(fmt.Sprintf(`{"id":"pay_%s","status":"captured","amount":1200,"currency":"USD","created_at":"x","updated_at":"x"}`, id))})
					m := nats.NewMsg(hq.EventSubject(s.id, typ))
					m.Data = b
					m.Header.Set(jetstream.MsgIDHeader, id)
					if _, err := s.js.PublishMsg(pctx, m); err == nil {
						published.Add(1)
					}
				}
			}
		}()
	}
	ingested := func() int64 {
		var n int64
		db.QueryRow(`SELECT count(*) FROM events`).Scan(&n)
		return n
	}
	waitCaught := func(limit time.Duration) (time.Duration, bool) {
		start := time.Now()
		for time.Since(start) < limit {
			if ingested() >= published.Load() {
				return time.Since(start), true
			}
			time.Sleep(100 * time.Millisecond)
		}
		return time.Since(start), false
	}
	// Warm up until every store's consumer is in place.
	if _, ok := waitCaught(60 * time.Second); !ok {
		fmt.Fprintln(stderr, "warning: hub not caught up after warm-up")
	}
	n0, t0 := ingested(), time.Now()
	time.Sleep(*steady)
	n1 := ingested()
	fmt.Fprintf(stdout, "hq ingest: %d stores x %.1f payments/s (3 events each): %.0f events/s ingested over %s (offered %.0f/s)\n",
		*stores, *rate, float64(n1-n0)/time.Since(t0).Seconds(), *steady, float64(*stores)**rate*3)
	for _, s := range sims[:*cut] {
		s.proxy.setCut(true)
	}
	time.Sleep(*outage)
	stop()
	wg.Wait()
	backlog := published.Load() - ingested()
	for _, s := range sims[:*cut] {
		s.proxy.setCut(false)
	}
	d, ok := waitCaught(10 * time.Minute)
	fmt.Fprintf(stdout, "hq catch-up: %d stores cut off for %s, backlog %d events, caught up in %s (ok=%v)\n",
		*cut, *outage, backlog, d.Round(time.Millisecond), ok)
	return nil
}

// benchProxy is a cuttable TCP path from a store to the hub.
type benchProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  []net.Conn
}

func newBenchProxy(target string) (*benchProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &benchProxy{ln: ln, target: target}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.cut {
				p.mu.Unlock()
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, up)
			p.mu.Unlock()
			go func() { io.Copy(up, c); up.Close() }()
			go func() { io.Copy(c, up); c.Close() }()
		}
	}()
	return p, nil
}

func (p *benchProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

func (p *benchProxy) close() { p.ln.Close(); p.setCut(true) }
