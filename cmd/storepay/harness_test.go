package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"storepay/devices"
	"storepay/gateway"
	"storepay/gateway/banksim"
)

const (
	testCardKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	visa        = "4242424242424242"
)

// bank is a banksim with its URLs, for tests.
type bank struct {
	name string
	sim  *banksim.Sim
	urls []string
	key  string
	iso  bool // an ISO 8583 switch (tcp:// URLs)
}

// startISOBank starts a banksim speaking the ISO 8583 profile.
func startISOBank(t testing.TB, name string, urls int) *bank {
	t.Helper()
	b := &bank{name: name, key: "key-" + name, iso: true}
	b.sim = banksim.New(banksim.Config{APIKey: b.key, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(func() { b.sim.Close() })
	for i := 0; i < urls; i++ {
		u, err := b.sim.ListenISO8583("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		b.urls = append(b.urls, u)
	}
	return b
}

func startBank(t testing.TB, name string, urls int) *bank {
	t.Helper()
	b := &bank{name: name, key: "key-" + name}
	b.sim = banksim.New(banksim.Config{APIKey: b.key, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	t.Cleanup(func() { b.sim.Close() })
	for i := 0; i < urls; i++ {
		u, err := b.sim.Listen("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		b.urls = append(b.urls, u)
	}
	return b
}

// store is a running storepay for tests, with an enrolled terminal and
// manager.
type store struct {
	t        testing.TB
	app      *App
	cfg      Config
	env      map[string]string
	url      string
	terminal string
	manager  string
	seq      atomic.Int64
	closed   bool
}

type storeOption func(*Config)

// fastBanks makes breakers and retries quick enough for tests.
func fastBanks(c *Config) {
	for i := range c.Gateways {
		g := &c.Gateways[i]
		g.AttemptTimeout = Duration{500 * time.Millisecond}
		g.BackoffMin, g.BackoffMax = Duration{5 * time.Millisecond}, Duration{20 * time.Millisecond}
		g.MaxAttempts = 3
		// No probes: a breaker the failures opened lets a trial through
		// after its delay, short here (a slow machine's retries can open
		// it while a test has its banks refusing).
		g.ProbeInterval = Duration{-1}
		g.BreakerDelay = Duration{300 * time.Millisecond}
	}
	c.PaymentBudget = Duration{5 * time.Second}
	c.Forwarding = ForwardingConfig{Interval: Duration{20 * time.Millisecond}, BackoffMin: Duration{20 * time.Millisecond},
		BackoffMax: Duration{200 * time.Millisecond}, RatePerSecond: 1000, Concurrency: 4}
}

func newConfig(t testing.TB, banks []*bank, opts ...storeOption) (Config, map[string]string) {
	cfg := Config{StoreID: "store-042", Listen: "127.0.0.1:0", Database: filepath.Join(t.TempDir(), "storepay.db"),
		CardKeyEnv: "STOREPAY_CARD_KEY",
		Offline:    OfflineConfig{FloorLimit: 10000, TotalLimit: 500000, MaxAge: Duration{72 * time.Hour}}}
	env := map[string]string{"STOREPAY_CARD_KEY": testCardKey}
	for _, b := range banks {
		if b.iso {
			cfg.Gateways = append(cfg.Gateways, GatewayConfig{Name: b.name, Protocol: "iso8583", URLs: b.urls,
				MerchantID: "store-042", TerminalID: "SP042001"})
			continue
		}
		envName := strings.ToUpper(strings.ReplaceAll(b.name, "-", "_")) + "_KEY"
		env[envName] = b.key
		cfg.Gateways = append(cfg.Gateways, GatewayConfig{Name: b.name, Protocol: "acquirer-json", URLs: b.urls,
			MerchantID: "store-042", APIKeyEnv: envName})
	}
	fastBanks(&cfg)
	cfg.ResolveInterval = Duration{50 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	return cfg, env
}

func startStore(t testing.TB, banks []*bank, opts ...storeOption) *store {
	t.Helper()
	cfg, env := newConfig(t, banks, opts...)
	s := &store{t: t, cfg: cfg, env: env}
	s.open()
	ctx := context.Background()
	var err error
	if s.terminal, err = s.app.Devices.Enroll(ctx, "lane-3", devices.RoleTerminal); err != nil {
		t.Fatal(err)
	}
	if s.manager, err = s.app.Devices.Enroll(ctx, "boss", devices.RoleManager); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *store) open() {
	s.t.Helper()
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewJSONHandler(testWriter{s.t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	app, err := OpenApp(context.Background(), s.cfg, func(k string) string { return s.env[k] }, log)
	if err != nil {
		s.t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	app.Start(ln)
	s.app, s.url, s.closed = app, app.URL(), false
	s.t.Cleanup(s.close)
}

func (s *store) close() {
	if s.closed {
		return
	}
	s.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.app.Close(ctx); err != nil {
		s.t.Errorf("close: %v", err)
	}
}

// restart stops storepay cleanly and starts it again on the same database.
func (s *store) restart() {
	s.close()
	s.open()
}

// restartWithCardKey restarts storepay with another STOREPAY_CARD_KEY
// (64 hex digits), as an operator who changed or mistyped it would.
func (s *store) restartWithCardKey(key string) {
	s.close()
	s.env["STOREPAY_CARD_KEY"] = key
	s.open()
}

// exec changes the database behind storepay's back, to set up a state
// the API cannot make (an older version's data, a pruned answer).
func (s *store) exec(q string) {
	s.t.Helper()
	if err := s.app.DB.Update(context.Background(), execSQL(q)); err != nil {
		s.t.Fatal(err)
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// resp is an HTTP answer with its JSON body decoded.
type resp struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (r resp) str(k string) string {
	v, _ := r.body[k].(string)
	return v
}

func (r resp) num(k string) int64 {
	v, _ := r.body[k].(float64)
	return int64(v)
}

func (r resp) String() string { return fmt.Sprintf("%d %s", r.status, r.raw) }

// call sends a request. key "" sends no Idempotency-Key; "auto" a fresh one.
func (s *store) call(method, path, token, key string, body any) resp {
	s.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			s.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, s.url+path, rd)
	if err != nil {
		s.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if key == "auto" {
		key = fmt.Sprintf("test-%d-%d", time.Now().UnixNano(), s.seq.Add(1))
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := resp{status: res.StatusCode, header: res.Header, raw: raw}
	checkAgainstOpenAPI(s.t, req, res.StatusCode, res.Header, raw)
	json.Unmarshal(raw, &r.body)
	return r
}

func (s *store) post(path string, body any) resp {
	return s.call("POST", path, s.terminal, "auto", body)
}
func (s *store) get(path string) resp { return s.call("GET", path, s.terminal, "", nil) }

func must(t testing.TB, r resp, status int) resp {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
	return r
}

func wantProblem(t testing.TB, r resp, status int, code string) {
	t.Helper()
	if r.status != status || r.str("code") != code {
		t.Fatalf("got %s, want %d %s", r, status, code)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("problem content type %q", ct)
	}
}

// order opens an order for total minor units.
func (s *store) order(total int64) string {
	s.t.Helper()
	r := must(s.t, s.post("/v1/orders", map[string]any{"channel": "walk_in", "currency": "USD",
		"lines": []map[string]any{{"sku": "ITEM", "description": "item", "quantity": 1, "unit_amount": total}}}), 201)
	return r.str("id")
}

func cardBody(amount int64, pan string, extra map[string]any) map[string]any {
	b := map[string]any{"method": "card", "amount": amount, "tip_amount": 0, "capture": true,
		"card": map[string]any{"pan": pan, "exp_month": 12, "exp_year": 2030}}
	for k, v := range extra {
		b[k] = v
	}
	return b
}

// clearOfMidnight makes sure the next d of the test lies within one UTC
// day: banks settle the day at midnight, which turns a reversal into a
// refund and splits a day's reconciliation. Closer than d to midnight it
// waits until the new day has begun (at most d, and only then).
func clearOfMidnight(t testing.TB, d time.Duration) {
	t.Helper()
	now := time.Now().UTC()
	next := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
	if left := next.Sub(now); left < d {
		t.Logf("%s to midnight UTC: waiting for the new business day", left.Round(time.Millisecond))
		time.Sleep(left + 100*time.Millisecond)
	}
}

// waitFor polls cond until it holds or the deadline passes: for effects of
// background work (the resolver), never to paper over a race.
func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func mustVault(t testing.TB) *gateway.Vault {
	t.Helper()
	key, _ := gateway.ParseCardKey(testCardKey)
	v, err := gateway.NewVault(key)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func testCard() gateway.Card { return gateway.Card{PAN: visa, ExpMonth: 12, ExpYear: 2030} }

func execSQL(q string, args ...any) func(*sql.Tx) error {
	return func(tx *sql.Tx) error {
		_, err := tx.Exec(q, args...)
		return err
	}
}
