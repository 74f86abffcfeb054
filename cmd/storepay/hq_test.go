package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"storepay/devices"
	"storepay/hq"
)

// linkProxy stands between a store and headquarters' leaf port, so a test
// can cut one store's link and restore it while the others stay up.
type linkProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  []net.Conn
}

func startLinkProxy(t testing.TB, target string) *linkProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &linkProxy{ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.setCut(true) })
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
	return p
}

func (p *linkProxy) url() string { return "nats-leaf://" + p.ln.Addr().String() }

// setCut drops every connection through the proxy and refuses new ones
// (true), or lets them through again (false).
func (p *linkProxy) setCut(cut bool) {
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

type testHub struct {
	hub   *hq.Hub
	url   string
	token string
}

func startTestHub(t testing.TB, stores map[string]string) *testHub {
	t.Helper()
	dir := t.TempDir()
	db, err := hq.OpenHubDB(context.Background(), filepath.Join(dir, "hq.db"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := hq.HubConfig{LeafListen: "127.0.0.1:0", DataDir: filepath.Join(dir, "nats")}
	for id, pw := range stores {
		cfg.Stores = append(cfg.Stores, hq.HubStore{ID: id, Password: pw})
	}
	h := &hq.Hub{Config: cfg, DB: db, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if testing.Verbose() {
		h.Log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if err := h.Open(); err != nil {
		t.Fatal(err)
	}
	tok, err := hq.Enroll(context.Background(), db, "risk-team")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h.Handler()}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close(); h.Close(); db.Close() })
	return &testHub{hub: h, url: "http://" + ln.Addr().String(), token: tok}
}

var (
	hqSpecOnce   sync.Once
	hqSpecRouter routers.Router
	hqSpecErr    error
)

// call sends a request to headquarters' API and checks the answer
// against headquarters' OpenAPI document.
func (h *testHub) call(t testing.TB, method, path string, body any) resp {
	t.Helper()
	var rd io.Reader
	if body != nil {
		j, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, h.url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+h.token)
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := resp{status: res.StatusCode, header: res.Header, raw: raw}
	json.Unmarshal(raw, &r.body)
	hqSpecOnce.Do(func() {
		doc, err := openapi3.NewLoader().LoadFromData(hq.OpenAPI())
		if err != nil {
			hqSpecErr = err
			return
		}
		hqSpecRouter, hqSpecErr = legacy.NewRouter(doc)
	})
	if hqSpecErr != nil {
		t.Fatalf("hq openapi.json: %v", hqSpecErr)
	}
	route, params, err := hqSpecRouter.FindRoute(req)
	if err != nil {
		t.Errorf("%s %s: not in hq openapi.json: %v", method, path, err)
		return r
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}},
		Status: res.StatusCode, Header: res.Header, Body: io.NopCloser(bytes.NewReader(raw)),
		Options: &openapi3filter.Options{IncludeResponseStatus: true},
	}
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Errorf("%s %s answered %d, which hq openapi.json does not describe: %v\n%s", method, path, res.StatusCode, err, raw)
	}
	return r
}

// hqStore is a store linked to headquarters through its own proxy.
type hqStore struct {
	*store
	proxy *linkProxy
	// crash, when set, fails the relay between publishing a batch and
	// deleting its outbox rows: the window a SIGKILL can hit.
	crash   atomic.Bool
	crashed atomic.Int64
}

func startHQStore(t *testing.T, id, password string, hub *testHub, banks []*bank) *hqStore {
	t.Helper()
	p := startLinkProxy(t, hub.hub.LeafAddr())
	cfg, env := newConfig(t, banks, func(c *Config) {
		c.StoreID = id
		// Four JetStream servers start beside the banks under -race on
		// a shared machine: give the bank more than the usual 500ms.
		for i := range c.Gateways {
			c.Gateways[i].AttemptTimeout = Duration{5 * time.Second}
		}
		c.PaymentBudget = Duration{20 * time.Second}
		c.HQ = &HQConfig{URLs: []string{p.url()}, CredentialsEnv: "STOREPAY_HQ_CREDS", DataDir: filepath.Join(t.TempDir(), "nats")}
	})
	env["STOREPAY_HQ_CREDS"] = id + ":" + password
	hs := &hqStore{proxy: p, store: &store{t: t, cfg: cfg, env: env}}
	hs.open()
	ctx := context.Background()
	var err error
	if hs.terminal, err = hs.app.Devices.Enroll(ctx, "lane-1", devices.RoleTerminal); err != nil {
		t.Fatal(err)
	}
	if hs.manager, err = hs.app.Devices.Enroll(ctx, "boss", devices.RoleManager); err != nil {
		t.Fatal(err)
	}
	return hs
}

// open starts the store with the crash hook wired into its relay.
func (hs *hqStore) open() {
	s := hs.store
	s.t.Helper()
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{s.t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	app, err := OpenApp(context.Background(), s.cfg, func(k string) string { return s.env[k] }, log)
	if err != nil {
		s.t.Fatal(err)
	}
	app.HQ.BeforeDelete = func() error {
		if hs.crash.Load() {
			hs.crashed.Add(1)
			return errors.New("simulated crash between publish and delete")
		}
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	app.Start(ln)
	s.app, s.url, s.closed = app, app.URL(), false
	s.t.Cleanup(s.close)
}

func (hs *hqStore) estop(t testing.TB) resp {
	return hs.mgr("GET", "/v1/estop", nil)
}

// storeRows reads id and status of every payment and SAF record.
func storeRows(t testing.TB, db *sql.DB, q string, args ...any) []string {
	t.Helper()
	rows, err := db.Query(q, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var a, b string
		var n int64
		if err := rows.Scan(&a, &b, &n); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s %s %d", a, b, n))
	}
	sort.Strings(out)
	return out
}

// TestHQChain runs headquarters and three stores: they sell online and
// offline, one store's link is cut and restored while it drains, one
// store's relay crashes between publishing and deleting (an in-process
// restart, not a SIGKILLed child), a chain-wide pause is sent while one
// store is cut off. Afterwards headquarters holds every event of every
// store exactly once and its view matches each store's database.
func TestHQChain(t *testing.T) {
	clearOfMidnight(t, 30*time.Second)
	a := startBank(t, "bank-a", 1)
	ids := []string{"store-1", "store-2", "store-3"}
	pw := map[string]string{}
	for _, id := range ids {
		pw[id] = "pw-" + id
	}
	hub := startTestHub(t, pw)
	var stores []*hqStore
	for _, id := range ids {
		stores = append(stores, startHQStore(t, id, pw[id], hub, []*bank{a}))
	}
	s1, s2, s3 := stores[0], stores[1], stores[2]

	sell := func(s *hqStore, amount int64) resp {
		t.Helper()
		id := s.order(amount)
		return must(t, s.post("/v1/orders/"+id+"/payments", cardBody(amount, visa, nil)), 201)
	}
	for _, s := range stores {
		for i := 0; i < 3; i++ {
			if p := sell(s, 1000+int64(i)); p.str("status") != "captured" {
				t.Fatalf("online payment: %s", p)
			}
		}
	}
	waitFor(t, "every store linked", 10*time.Second, func() bool {
		r := must(t, hub.call(t, "GET", "/v1/stores", nil), 200)
		up := 0
		for _, d := range r.body["data"].([]any) {
			if d.(map[string]any)["link"] == "up" {
				up++
			}
		}
		return up == 3
	})

	// Banks down: offline payments queue everywhere.
	refuseAll(t, a)
	var stored []string
	for _, s := range stores {
		for i := 0; i < 2; i++ {
			p := sell(s, 2000+int64(i))
			if p.str("status") != "stored" {
				t.Fatalf("offline payment: %s", p)
			}
			stored = append(stored, p.str("id"))
		}
	}
	waitFor(t, "headquarters to see 6 offline payments", 10*time.Second, func() bool {
		e := must(t, hub.call(t, "GET", "/v1/exposure", nil), 200)
		t.Logf("exposure %s", e)
		return e.num("saf_count") == 6 && e.num("saf_amount") == 3*(2000+2001) && e.str("currency") == "USD"
	})

	// store-2 loses headquarters; it keeps selling and drains alone.
	s2.proxy.setCut(true)
	waitFor(t, "store-2 link down", 10*time.Second, func() bool { return !s2.app.HQ.Connected() })
	sell(s2, 2500)
	// store-3's relay crashes after publishing, before deleting.
	s3.crash.Store(true)
	sell(s3, 2600)
	waitFor(t, "store-3 relay to crash mid-batch", 10*time.Second, func() bool { return s3.crashed.Load() > 0 })
	s3.close()
	s3.crash.Store(false)
	s3.open()

	// Chain-wide pause while store-2 is cut off.
	start := time.Now()
	r := must(t, hub.call(t, "PUT", "/v1/estop", map[string]any{"state": "pause", "reason": "incident 7: card testing"}), 202)
	cmd := r.str("id")
	// Both connected stores get it. How fast (the bound: 2 s) is
	// a figure, not an assert (a loaded CI machine under the race
	// detector once took longer): the line below prints it, and
	// docs/performance.md records it with the command.
	waitFor(t, "store-1 and store-3 paused", 20*time.Second, func() bool {
		return s1.estop(t).str("state") == "pause" && s3.estop(t).str("state") == "pause"
	})
	t.Logf("chain-wide pause reached the connected stores in %s", time.Since(start).Round(time.Millisecond))
	if e := s1.estop(t); e.str("actor") != hq.Actor || e.str("reason") != "incident 7: card testing" {
		t.Fatalf("store-1 estop: %s", e)
	}
	if e := s2.estop(t); e.str("state") != "go" {
		t.Fatalf("a cut-off store cannot have the pause yet: %s", e)
	}
	c := must(t, hub.call(t, "GET", "/v1/commands/"+cmd, nil), 200)
	if c.str("state") != "pending" {
		t.Fatalf("command with a store cut off: %s", c)
	}

	// Banks back: store-2 drains while still cut off (not paused: it
	// never got the pause); the paused stores keep their queue.
	clearAll(t, a)
	waitFor(t, "store-2 to drain alone", 10*time.Second, func() bool {
		var n int
		s2.app.DB.Read().QueryRow(`SELECT count(*) FROM saf_records WHERE status IN ('queued','forwarding','held')`).Scan(&n)
		return n == 0
	})

	// The link returns: the pause arrives, and everything store-2 did.
	s2.proxy.setCut(false)
	waitFor(t, "store-2 paused on reconnect", 10*time.Second, func() bool { return s2.estop(t).str("state") == "pause" })
	waitFor(t, "command applied everywhere", 10*time.Second, func() bool {
		return must(t, hub.call(t, "GET", "/v1/commands/"+cmd, nil), 200).str("state") == "applied"
	})

	// Resume the chain; the paused stores drain.
	must(t, hub.call(t, "PUT", "/v1/estop", map[string]any{"state": "go", "reason": "incident 7 over"}), 202)
	for _, s := range stores {
		waitFor(t, s.cfg.StoreID+" drained", 10*time.Second, func() bool {
			var n int
			s.app.DB.Read().QueryRow(`SELECT count(*) FROM saf_records WHERE status IN ('queued','forwarding','held')`).Scan(&n)
			return n == 0 && s.estop(t).str("state") == "go"
		})
	}

	// Every event exactly once, and the view equals each store's rows.
	ctx := context.Background()
	for _, s := range stores {
		id := s.cfg.StoreID
		db := s.app.DB.Read()
		waitFor(t, id+" outbox relayed and ingested", 20*time.Second, func() bool {
			var left, last, got, distinct, max int64
			db.QueryRow(`SELECT count(*) FROM hq_outbox`).Scan(&left)
			db.QueryRow(`SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'hq_outbox'), 0)`).Scan(&last)
			hub.hub.DB.QueryRow(`SELECT count(*), count(DISTINCT seq), coalesce(max(seq), 0) FROM events WHERE store_id = ?`, id).Scan(&got, &distinct, &max)
			ok := left == 0 && last > 0 && got == last && distinct == last && max == last
			if !ok {
				var missing []string
				for q := int64(1); q <= last; q++ {
					var n int
					hub.hub.DB.QueryRow(`SELECT count(*) FROM events WHERE store_id = ? AND seq = ?`, id, q).Scan(&n)
					if n == 0 {
						missing = append(missing, fmt.Sprint(q))
					}
				}
				n, _ := s.app.HQ.StreamMessages(ctx)
				t.Logf("%s: outbox left %d, written %d, local stream %d; hq has %d (%d distinct, max %d), missing %v", id, left, last, n, got, distinct, max, missing)
			}
			return ok
		})
		n, err := s.app.HQ.StreamMessages(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var last uint64
		db.QueryRow(`SELECT seq FROM sqlite_sequence WHERE name = 'hq_outbox'`).Scan(&last)
		if n != last {
			t.Fatalf("%s: local stream holds %d events for %d written: Nats-Msg-Id did not de-duplicate", id, n, last)
		}
		// The store may still be settling (a capture after the drain):
		// poll until the view equals the store's rows.
		var diff string
		ok := false
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			diff = ""
			for _, q := range [][2]string{
				{`SELECT id, status, amount FROM payments`, `SELECT id, status, amount FROM payments WHERE store_id = ?`},
				{`SELECT id, status, amount FROM saf_records`, `SELECT id, status, amount FROM saf WHERE store_id = ?`},
			} {
				want, got := storeRows(t, db, q[0]), storeRows(t, hub.hub.DB, q[1], id)
				if strings.Join(want, "\n") != strings.Join(got, "\n") {
					diff += fmt.Sprintf("store:\n%s\nhq:\n%s\n", strings.Join(want, "\n"), strings.Join(got, "\n"))
				}
			}
			if diff == "" {
				ok = true
				break
			}
		}
		if !ok {
			t.Fatalf("%s: headquarters' view differs from the store:\n%s", id, diff)
		}
	}
	if s3.crashed.Load() == 0 {
		t.Fatal("the relay never crashed")
	}
	st := must(t, hub.call(t, "GET", "/v1/stores", nil), 200)
	for _, d := range st.body["data"].([]any) {
		m := d.(map[string]any)
		if m["link"] != "up" || m["estop"] != "go" || m["last_event_at"] == nil {
			t.Fatalf("store row: %v", m)
		}
	}
	if e := must(t, hub.call(t, "GET", "/v1/exposure", nil), 200); e.num("saf_count") != 0 || e.num("stores") != 3 {
		t.Fatalf("exposure after the drain: %s", e)
	}
}

// TestHQCommands sends headquarters' other commands to two stores: a bank
// taken out of service and back (an enable does not lift a disable a
// store's manager made), a card put on the chain's hot list and taken
// off, and bad commands refused at headquarters without a trace.
func TestHQCommands(t *testing.T) {
	clearOfMidnight(t, 30*time.Second)
	a, b := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	pw := map[string]string{"store-1": "pw-1", "store-2": "pw-2"}
	hub := startTestHub(t, pw)
	s1 := startHQStore(t, "store-1", pw["store-1"], hub, []*bank{a, b})
	s2 := startHQStore(t, "store-2", pw["store-2"], hub, []*bank{a, b})
	stores := []*hqStore{s1, s2}
	waitFor(t, "both stores linked", 15*time.Second, func() bool {
		return s1.app.HQ.Connected() && s2.app.HQ.Connected()
	})
	state := func(s *hqStore, name string) string {
		for _, g := range must(t, s.mgr("GET", "/v1/gateways", nil), 200).body["data"].([]any) {
			if m := g.(map[string]any); m["name"] == name {
				return m["state"].(string)
			}
		}
		return ""
	}
	// Headquarters sees each store's banks as they are.
	waitFor(t, "headquarters to see both stores' banks", 15*time.Second, func() bool {
		n := 0
		for _, d := range must(t, hub.call(t, "GET", "/v1/stores", nil), 200).body["data"].([]any) {
			for _, g := range d.(map[string]any)["gateways"].([]any) {
				if g.(map[string]any)["state"] == "closed" {
					n++
				}
			}
		}
		return n == 4
	})
	applied := func(id string) map[string]string {
		out := map[string]string{}
		waitFor(t, "command "+id+" applied", 15*time.Second, func() bool {
			c := must(t, hub.call(t, "GET", "/v1/commands/"+id, nil), 200)
			for _, s := range c.body["stores"].([]any) {
				m := s.(map[string]any)
				out[m["store_id"].(string)] = m["result"].(string)
			}
			return c.str("state") == "applied"
		})
		return out
	}
	audited := func(s *hqStore, action string) int {
		var n int
		s.app.DB.Read().QueryRow(`SELECT count(*) FROM audit_log WHERE actor = ? AND action = ?`, hq.Actor, action).Scan(&n)
		return n
	}

	// A bank out of service chain-wide: payments go to the next bank.
	r := must(t, hub.call(t, "PUT", "/v1/gateways/bank-a", map[string]any{"action": "disable", "reason": "acquirer incident 12"}), 202)
	if res := applied(r.str("id")); res["store-1"] != "applied" || res["store-2"] != "applied" {
		t.Fatalf("disable results: %v", res)
	}
	for _, s := range stores {
		if st := state(s, "bank-a"); st != "disabled" {
			t.Fatalf("%s: bank-a %s after headquarters disabled it", s.cfg.StoreID, st)
		}
		if p := must(t, s.post("/v1/orders/"+s.order(700)+"/payments", cardBody(700, visa, nil)), 201); p.str("gateway") != "bank-b" {
			t.Fatalf("%s: a payment with bank-a disabled went to %s", s.cfg.StoreID, p.str("gateway"))
		}
		if n := audited(s, "gateway.disable"); n != 1 {
			t.Fatalf("%s: %d audit lines for headquarters' disable", s.cfg.StoreID, n)
		}
	}
	// store-2's manager takes over: enables, then disables it as their own.
	must(t, s2.mgr("POST", "/v1/gateways/bank-a/enable", map[string]any{"reason": "checking"}), 200)
	must(t, s2.mgr("POST", "/v1/gateways/bank-a/disable", map[string]any{"reason": "our terminal sees double charges"}), 200)
	r = must(t, hub.call(t, "PUT", "/v1/gateways/bank-a", map[string]any{"action": "enable", "reason": "incident 12 over"}), 202)
	if res := applied(r.str("id")); res["store-1"] != "applied" || res["store-2"] != "kept_local" {
		t.Fatalf("enable results: %v, want store-1 applied and store-2 kept_local", res)
	}
	if st := state(s1, "bank-a"); st == "disabled" {
		t.Fatal("store-1: bank-a still disabled after headquarters enabled it")
	}
	if st := state(s2, "bank-a"); st != "disabled" {
		t.Fatalf("store-2: bank-a %s; the manager's disable must stay", st)
	}
	// One store's bank, by name; a bank a store does not have is rejected there.
	r = must(t, hub.call(t, "PUT", "/v1/stores/store-1/gateways/bank-z", map[string]any{"action": "disable", "reason": "typo"}), 202)
	if res := applied(r.str("id")); !strings.HasPrefix(res["store-1"], "rejected") || len(res) != 1 {
		t.Fatalf("unknown bank results: %v", res)
	}

	// The chain's hot list: the card is refused offline everywhere, then
	// accepted again once removed.
	refuseAll(t, a, b)
	const hot = "5555555555554444"
	r = must(t, hub.call(t, "POST", "/v1/hot-cards", map[string]any{"card": "555555******4444", "action": "add", "reason": "stolen at store-7"}), 202)
	applied(r.str("id"))
	for _, s := range stores {
		p := must(t, s.post("/v1/orders/"+s.order(300)+"/payments", cardBody(300, hot, nil)), 201)
		if p.str("status") != "declined" || p.str("decline_code") != "offline_card_blocked" {
			t.Fatalf("%s: a hot card offline: %s", s.cfg.StoreID, p)
		}
		if n := audited(s, "hot_card.add"); n != 1 {
			t.Fatalf("%s: %d audit lines for the hot card", s.cfg.StoreID, n)
		}
	}
	r = must(t, hub.call(t, "POST", "/v1/hot-cards", map[string]any{"card": "555555******4444", "action": "remove", "reason": "card recovered"}), 202)
	applied(r.str("id"))
	for _, s := range stores {
		if p := must(t, s.post("/v1/orders/"+s.order(300)+"/payments", cardBody(300, hot, nil)), 201); p.str("status") != "stored" {
			t.Fatalf("%s: the card off the hot list, offline: %s", s.cfg.StoreID, p)
		}
	}

	// Bad commands: refused, nothing recorded, and a full card number is
	// never echoed.
	var before int
	hub.hub.DB.QueryRow(`SELECT count(*) FROM commands`).Scan(&before)
	for _, c := range []struct {
		method, path string
		body         any
		status       int
	}{
		{"POST", "/v1/hot-cards", map[string]any{"card": hot, "action": "add", "reason": "x"}, 422},
		{"POST", "/v1/hot-cards", map[string]any{"card": "555555******4444", "action": "block", "reason": "x"}, 422},
		{"POST", "/v1/hot-cards", map[string]any{"card": "555555******4444", "action": "add", "reason": " "}, 422},
		{"POST", "/v1/hot-cards", map[string]any{"card": "555555******4444", "action": "add", "reason": "x", "pan": hot}, 400},
		{"PUT", "/v1/gateways/bank-a", map[string]any{"action": "off", "reason": "x"}, 422},
		{"PUT", "/v1/gateways/bank.a", map[string]any{"action": "disable", "reason": "x"}, 422},
		{"PUT", "/v1/stores/store-9/gateways/bank-a", map[string]any{"action": "disable", "reason": "x"}, 404},
		{"POST", "/v1/stores/store-9/hot-cards", map[string]any{"card": "555555******4444", "action": "add", "reason": "x"}, 404},
	} {
		res := hub.call(t, c.method, c.path, c.body)
		if res.status != c.status || strings.Contains(string(res.raw), hot) {
			t.Errorf("%s %s %v: %d %s, want %d without the card number", c.method, c.path, c.body, res.status, res.raw, c.status)
		}
	}
	var after int
	hub.hub.DB.QueryRow(`SELECT count(*) FROM commands`).Scan(&after)
	if after != before {
		t.Errorf("bad commands recorded: %d commands, was %d", after, before)
	}
}

// TestHQStoreSIGKILLedMidRelay kills a real storepay process (SIGKILL)
// while terminals sell and its relay copies events, restarts it on the
// same database and JetStream directory, and checks that headquarters
// ends with every event the store wrote exactly once and every payment
// the terminals were answered, as the store's database has it. (The
// in-process TestHQChain fails the relay exactly between publishing and
// deleting; here the kernel kills the process wherever it is, JetStream's
// own files included.)
func TestHQStoreSIGKILLedMidRelay(t *testing.T) {
	clearOfMidnight(t, 60*time.Second)
	b := startBank(t, "bank-a", 1)
	const id, pw = "store-9", "pw-9"
	hub := startTestHub(t, map[string]string{id: pw})
	dir := t.TempDir()
	db := filepath.Join(dir, "storepay.db")
	cfgPath := filepath.Join(dir, "storepay.json")
	cfg := fmt.Sprintf(`{"store_id": %q, "listen": "127.0.0.1:0", "database": %q,
		"gateways": [{"name": "bank-a", "protocol": "acquirer-json", "urls": [%q], "merchant_id": "store-042",
		"api_key_env": "BANK_A_KEY", "probe_interval": "-1s"}],
		"hq": {"urls": ["nats-leaf://%s"], "credentials_env": "STOREPAY_HQ_CREDS", "data_dir": %q}}`,
		id, db, b.urls[0], hub.hub.LeafAddr(), filepath.Join(dir, "nats"))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"STOREPAY_CARD_KEY=" + testCardKey, "BANK_A_KEY=" + b.key, "STOREPAY_HQ_CREDS=" + id + ":" + pw}
	tokCmd := exec.Command(os.Args[0], "devices", "enroll", "--config", cfgPath, "--name", "lane-1", "--role", "terminal")
	tokCmd.Env = append(append(os.Environ(), runMainEnv+"=1"), env...)
	raw, err := tokCmd.Output()
	if err != nil {
		t.Fatalf("devices enroll: %v", err)
	}
	token := strings.TrimSpace(string(raw))

	// post sends one terminal request; ok is false when the process did
	// not answer (it was killed).
	var keys atomic.Int64
	post := func(url, body string) (r resp, ok bool) {
		req, _ := http.NewRequest("POST", url, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", fmt.Sprintf("kill-test-%d", keys.Add(1)))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		res, err := http.DefaultClient.Do(req.WithContext(ctx))
		if err != nil {
			return r, false
		}
		defer res.Body.Close()
		r.status = res.StatusCode
		if json.NewDecoder(res.Body).Decode(&r.body) != nil {
			return r, false
		}
		return r, true
	}
	// sell keeps terminals selling until stop closes, and records each
	// payment the store answered 201.
	var mu sync.Mutex
	answered := map[string]string{}
	sell := func(url string, stop <-chan struct{}) *sync.WaitGroup {
		var wg sync.WaitGroup
		for lane := 0; lane < 3; lane++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					o, ok := post(url+"/v1/orders", `{"channel":"walk_in","currency":"USD",
						"lines":[{"sku":"TEA","description":"Tea","quantity":1,"unit_amount":300}]}`)
					if !ok || o.status != http.StatusCreated {
						return // the process is gone
					}
					p, ok := post(url+"/v1/orders/"+o.str("id")+"/payments",
						`{"method":"card","amount":300,"tip_amount":0,"capture":true,"card":{"pan":"4242424242424242","exp_month":12,"exp_year":2030}}`)
					if !ok || p.status != http.StatusCreated {
						return
					}
					mu.Lock()
					answered[p.str("id")] = p.str("status")
					mu.Unlock()
				}
			}()
		}
		return &wg
	}

	first := startChild(t, env, "serve", "--config", cfgPath)
	url := first.serving(t)
	stop := make(chan struct{})
	wg := sell(url, stop)
	// Kill once headquarters has some of the events and the terminals
	// are still selling: the relay is mid-stream.
	outbox, err := sql.Open("sqlite", "file:"+db+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer outbox.Close()
	waitFor(t, "headquarters to ingest the first events, with more waiting", 30*time.Second, func() bool {
		var n, waiting int
		hub.hub.DB.QueryRow(`SELECT count(*) FROM events WHERE store_id = ?`, id).Scan(&n)
		outbox.QueryRow(`SELECT count(*) FROM hq_outbox`).Scan(&waiting)
		mu.Lock()
		sold := len(answered)
		mu.Unlock()
		return n >= 20 && sold >= 10 && waiting > 0
	})
	first.cmd.Process.Signal(syscall.SIGKILL)
	first.wait()
	close(stop)
	wg.Wait()
	var left int
	outbox.QueryRow(`SELECT count(*) FROM hq_outbox`).Scan(&left)
	t.Logf("killed with %d events not yet relayed", left)

	second := startChild(t, env, "serve", "--config", cfgPath)
	url = second.serving(t)
	stop = make(chan struct{})
	wg = sell(url, stop)
	waitFor(t, "more payments after the restart", 30*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(answered) >= 40
	})
	close(stop)
	wg.Wait()

	rdb, err := sql.Open("sqlite", "file:"+db+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	waitFor(t, "every event at headquarters exactly once", 30*time.Second, func() bool {
		var left, last, got, distinct, max int64
		rdb.QueryRow(`SELECT count(*) FROM hq_outbox`).Scan(&left)
		rdb.QueryRow(`SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'hq_outbox'), 0)`).Scan(&last)
		hub.hub.DB.QueryRow(`SELECT count(*), count(DISTINCT seq), coalesce(max(seq), 0) FROM events WHERE store_id = ?`, id).Scan(&got, &distinct, &max)
		return left == 0 && last > 0 && got == last && distinct == last && max == last
	})
	mu.Lock()
	defer mu.Unlock()
	for pid, status := range answered {
		var st string
		if err := hub.hub.DB.QueryRow(`SELECT status FROM payments WHERE store_id = ? AND id = ?`, id, pid).Scan(&st); err != nil {
			t.Errorf("payment %s (answered %s) not at headquarters: %v", pid, status, err)
		} else if st != status {
			t.Errorf("payment %s: headquarters has %s, the terminal was answered %s", pid, st, status)
		}
	}
	want, got := storeRows(t, rdb, `SELECT id, status, amount FROM payments`), storeRows(t, hub.hub.DB, `SELECT id, status, amount FROM payments WHERE store_id = ?`, id)
	if strings.Join(want, "\n") != strings.Join(got, "\n") {
		t.Errorf("headquarters' payments differ from the store's database:\nstore %d rows, hq %d rows", len(want), len(got))
	}
}
