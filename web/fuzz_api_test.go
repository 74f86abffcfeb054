package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"storepay/devices"
	"storepay/gateway"
	"storepay/gateway/acquirer"
	"storepay/gateway/banksim"
	"storepay/migrations"
	"storepay/orders"
	"storepay/saf"
	"storepay/web"
)

// fuzzEnv is one storepay web server for a fuzz worker: a real SQLite
// file, a real router in front of the bank simulator on loopback, enrolled
// tokens, and the orders and payments the routes act on. Requests go
// through the server's handler in process (no socket between the fuzzer
// and storepay), so an iteration costs what storepay itself does: a few
// commits and, for card payments, one call to the simulator.
type fuzzEnv struct {
	server   *web.Server
	db       *migrations.DB
	handler  http.Handler
	terminal string
	lane2    string // a second terminal
	manager  string
	logs     *syncBuffer
	seq      int

	// Fixtures the routes act on, made when first needed and made again
	// once a request may have changed them: a fuzzed body that is refused
	// (4xx) leaves them as they were, so most iterations reuse them.
	fixtures map[string]string
}

func newFuzzEnv(tb testing.TB) *fuzzEnv { return newAPIEnv(tb, slog.LevelWarn) }

func newAPIEnv(tb testing.TB, level slog.Level) *fuzzEnv { return newAPIEnvUndo(tb, level, "") }

// newAPIEnv is a fuzzEnv whose logs keep lines from level up, as JSON,
// through web.RequestIDHandler as storepay's own logger does.
func newAPIEnvUndo(tb testing.TB, level slog.Level, undo web.UndoPolicy) *fuzzEnv {
	tb.Helper()
	ctx := context.Background()
	e := &fuzzEnv{logs: &syncBuffer{}, fixtures: map[string]string{}}
	log := slog.New(web.RequestIDHandler(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: level})))
	db, err := migrations.Open(ctx, filepath.Join(tb.TempDir(), "storepay.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	e.db = db
	reg := &devices.Registry{DB: db}
	if e.manager, err = reg.Enroll(ctx, "boss", devices.RoleManager); err != nil {
		tb.Fatal(err)
	}
	if e.terminal, err = reg.Enroll(ctx, "lane-1", devices.RoleTerminal); err != nil {
		tb.Fatal(err)
	}
	if e.lane2, err = reg.Enroll(ctx, "lane-2", devices.RoleTerminal); err != nil {
		tb.Fatal(err)
	}
	sim := banksim.New(banksim.Config{APIKey: "key-a", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	tb.Cleanup(func() { sim.Close() })
	u, err := sim.Listen("127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	router, err := gateway.NewRouter([]gateway.BankSpec{{Name: "bank-a", Policy: gateway.Policy{ProbeInterval: -1},
		Endpoints: []gateway.Endpoint{acquirer.New(acquirer.Config{BaseURL: u, APIKey: "key-a", MerchantID: "store-042", Gateway: "bank-a"})}}}, log)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(router.Close)
	key, _ := gateway.ParseCardKey(testCardKey)
	vault, err := gateway.NewVault(key)
	if err != nil {
		tb.Fatal(err)
	}
	svc := &orders.Service{DB: db, Bank: router, Vault: vault, Log: log, AuthBudget: 10 * time.Second}
	queue := &saf.Queue{DB: db, Vault: vault, Bank: router, Payments: svc, Log: log,
		Rules:   saf.Rules{FloorLimit: 10000, TotalLimit: 500000, MaxAge: 72 * time.Hour},
		Forward: saf.ForwardPolicy{Interval: -1}}
	svc.Offline = queue
	e.server = web.New(web.Config{DB: db, Orders: svc, Devices: reg, Router: router, SAF: queue, Log: log, Undo: undo})
	e.handler = e.server.Handler()
	return e
}

// syncBuffer collects the server's warnings and errors of one iteration,
// to show with a failure (a 500's cause is logged, not answered).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) take() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.b.String()
	s.b.Reset()
	return out
}

type fuzzAnswer struct {
	status int
	header http.Header
	body   []byte
}

func (a fuzzAnswer) String() string {
	return fmt.Sprintf("%d %s %s", a.status, a.header.Get("Content-Type"), a.body)
}

func (e *fuzzEnv) key() string {
	e.seq++
	return fmt.Sprintf("fuzz-%d", e.seq)
}

func (e *fuzzEnv) do(method, path, token, key string, body []byte) fuzzAnswer {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	w := httptest.NewRecorder()
	e.handler.ServeHTTP(w, req)
	return fuzzAnswer{status: w.Code, header: w.Header(), body: w.Body.Bytes()}
}

// fixture returns the id of a fixture of the given kind, making one when
// there is none: "order" an open order of 20.00, "preauth" a card payment
// authorized and not captured, "sale" a captured card sale of 20.00.
func (e *fuzzEnv) fixture(tb testing.TB, kind string) string {
	tb.Helper()
	if id := e.fixtures[kind]; id != "" {
		return id
	}
	created := func(a fuzzAnswer) string {
		var v struct{ ID string }
		if a.status != http.StatusCreated || json.Unmarshal(a.body, &v) != nil || v.ID == "" {
			tb.Fatalf("fixture %s: %s\n%s", kind, a, e.logs.take())
		}
		return v.ID
	}
	order := created(e.do("POST", "/v1/orders", e.terminal, e.key(),
		[]byte(`{"channel":"walk_in","currency":"USD","lines":[{"sku":"LATTE-L","description":"Latte large","quantity":4,"unit_amount":500}]}`)))
	id := order
	if kind != "order" {
		capture := kind == "sale"
		id = created(e.do("POST", "/v1/orders/"+order+"/payments", e.terminal, e.key(), fmt.Appendf(nil,
			`{"method":"card","amount":2000,"tip_amount":0,"capture":%t,"card":{"pan":"4242424242424242","exp_month":12,"exp_year":2030}}`, capture)))
	}
	e.fixtures[kind] = id
	return id
}

// fuzzRoutes are the requests that take a body from outside, each with
// the fixture its path names ("" for none).
var fuzzRoutes = []struct {
	method, path, fixture string
	manager, idempotent   bool
}{
	{"POST", "/v1/orders", "", false, true},
	{"POST", "/v1/orders/{order}/payments", "order", false, true},
	{"POST", "/v1/orders/{order}/deliver", "order", false, true},
	{"POST", "/v1/orders/{order}/cancel", "order", false, true},
	{"POST", "/v1/payments/{preauth}/capture", "preauth", false, true},
	{"POST", "/v1/payments/{preauth}/void", "preauth", false, true},
	{"POST", "/v1/payments/{sale}/refunds", "sale", false, true},
	{"PUT", "/v1/estop", "", true, false},
	{"POST", "/v1/gateways/bank-a/enable", "", true, false},
	{"POST", "/v1/saf/replay", "", true, false},
	{"POST", "/v1/saf/saf_0000/hold", "", true, false},
	{"POST", "/v1/reconciliations/proposals/1/reject", "", true, false},
}

// FuzzAPIRequestBodies sends arbitrary bodies to the API's routes through
// the real server, and holds every answer to what a terminal relies on:
//
//   - no panic and no 5xx: a body is refused with a 4xx, or acted on; the
//     one 5xx allowed is 503 bank_unavailable, which the bank decides;
//   - every non-2xx answer is application/problem+json with its status
//     and a code; every 2xx answer is JSON;
//   - no answer carries a card number, not even one sent where text
//     belongs (the contract: the response never contains one);
//   - a repeat under the same Idempotency-Key that is answered as a
//     replay gets the very status and body of the first answer, and a
//     request that succeeded is always answered that way.
func FuzzAPIRequestBodies(f *testing.F) {
	for i, body := range []string{
		`{"channel":"walk_in","currency":"USD","lines":[{"sku":"LATTE-L","description":"Latte large","quantity":2,"unit_amount":450}]}`,
		`{"method":"card","amount":2000,"tip_amount":150,"capture":true,"card":{"pan":"4242424242424242","exp_month":12,"exp_year":2030}}`,
		``,
		`{}`,
		`{"amount":1500,"tip_amount":200}`,
		`{}`,
		`{"amount":500}`,
		`{"state":"pause","reason":"count the drawer"}`,
		`{"reason":"bank back after maintenance"}`,
		`{"reason":"network back"}`,
		`{"reason":"card reported stolen"}`,
		`{"reason":"duplicate"}`,
	} {
		f.Add(uint8(i), []byte(body))
	}
	f.Add(uint8(1), []byte(`{"method":"cash","amount":2000}`))
	f.Add(uint8(1), []byte(`{"method":"card","amount":2000,"card":{"pan":"4242424242424241","exp_month":12,"exp_year":2030}}`))
	f.Add(uint8(1), []byte(`{"method":"card","amount":2000,"offline_behavior":"force_offline","card":{"pan":"4000000000000002","exp_month":1,"exp_year":2031}}`))
	f.Add(uint8(0), []byte(`{"channel":"walk_in","currency":"USD","lines":[{"sku":"X","quantity":9223372036854775807,"unit_amount":9223372036854775807}]}`))
	f.Add(uint8(0), []byte(`{"Channel":"walk_in"}`))
	f.Add(uint8(6), []byte(`{"amount":-1}`))
	f.Add(uint8(7), []byte(`{"state":"go","reason":"`+strings.Repeat("é", 600)+`"}`))
	f.Add(uint8(4), []byte(`{"amount":1e400}`))
	// A card number typed where text belongs.
	f.Add(uint8(0), []byte(`{"channel":"walk_in","currency":"USD","lines":[{"sku":"GIFT","description":"gift card 4111 1111 1111 1111","quantity":1,"unit_amount":2500}]}`))
	f.Add(uint8(7), []byte(`{"state":"stop","reason":"card 5555555555554444 skimmed at lane 2"}`))
	f.Add(uint8(11), []byte(`{"reason":"customer card 4242424242424242"}`))
	f.Add(uint8(8), []byte(`{"reason":"customer card 4242424242424242"}`))
	f.Add(uint8(7), []byte(`{"state":"4242424242424242"}`))

	e := newFuzzEnv(f)
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		r := fuzzRoutes[int(route)%len(fuzzRoutes)]
		path, token, key := r.path, e.terminal, ""
		if r.fixture != "" {
			path = strings.Replace(path, "{"+r.fixture+"}", e.fixture(t, r.fixture), 1)
		}
		if r.manager {
			token = e.manager
		}
		if r.idempotent {
			key = e.key()
		}
		e.logs.take()
		first := e.do(r.method, path, token, key, body)
		if first.status < 400 || first.status >= 500 {
			// It may have acted on the fixture: the next iteration gets
			// a fresh one.
			delete(e.fixtures, r.fixture)
		}
		checkAnswer(t, r.method+" "+path, body, first, e.logs.take())
		if !r.idempotent {
			return
		}
		again := e.do(r.method, path, token, key, body)
		checkAnswer(t, "repeat of "+r.method+" "+path, body, again, e.logs.take())
		replayed := again.header.Get("Idempotent-Replayed") == "true"
		if first.status < 300 && !replayed {
			t.Fatalf("%s %s: a repeat of a success under its key is not a replay:\nfirst %s\nthen  %s", r.method, path, first, again)
		}
		if replayed && (again.status != first.status || !bytes.Equal(again.body, first.body)) {
			t.Fatalf("%s %s: a replay differs from the first answer:\nfirst %s\nthen  %s", r.method, path, first, again)
		}
	})
}

func checkAnswer(t *testing.T, what string, body []byte, a fuzzAnswer, logs string) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("%s with body %q: %s\nanswer: %s\nserver log:\n%s", what, body, fmt.Sprintf(format, args...), a, logs)
	}
	// The contract: the response never contains a full card number, so
	// one sent where it does not belong is not echoed either.
	if pan := cardNumberIn(a.body); pan != "" {
		fail("the answer carries the card number %q", pan)
	}
	ct, _, _ := mime.ParseMediaType(a.header.Get("Content-Type"))
	if a.status < 300 {
		if ct != "application/json" || !json.Valid(a.body) {
			fail("a success that is not JSON")
		}
		return
	}
	var p struct {
		Status int    `json:"status"`
		Code   string `json:"code"`
		Detail string `json:"detail"`
	}
	if ct != "application/problem+json" || json.Unmarshal(a.body, &p) != nil || p.Code == "" || p.Status != a.status {
		fail("not a problem+json document with its status and a code")
	}
	if a.status >= 500 && !(a.status == http.StatusServiceUnavailable && p.Code == "bank_unavailable") {
		fail("a server error")
	}
}

// cardNumberIn returns text of a JSON answer that holds a card number,
// or "". An order line's sku is a product code, kept as sent: an EAN-13
// can pass for a card number (web masks descriptions, not skus).
func cardNumberIn(body []byte) string {
	var doc any
	if json.Unmarshal(body, &doc) != nil {
		if gateway.MaskPANs(string(body)) != string(body) {
			return string(body)
		}
		return ""
	}
	var walk func(v any) string
	walk = func(v any) string {
		switch v := v.(type) {
		case string:
			if gateway.MaskPANs(v) != v {
				return v
			}
		case []any:
			for _, e := range v {
				if s := walk(e); s != "" {
					return s
				}
			}
		case map[string]any:
			for k, e := range v {
				if gateway.MaskPANs(k) != k {
					return k
				}
				if s := walk(e); k != "sku" && s != "" {
					return s
				}
			}
		}
		return ""
	}
	return walk(doc)
}
