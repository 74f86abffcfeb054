package web_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// Every line logged while serving a request names it, the domain's
// "payment decided" included, not only the access line.
func TestEveryLogLineOfARequestCarriesItsID(t *testing.T) {
	e := newAPIEnv(t, slog.LevelInfo)
	order := e.fixture(t, "order")
	e.logs.take()
	a := e.do("POST", "/v1/orders/"+order+"/payments", e.terminal, e.key(),
		[]byte(`{"method":"card","amount":500,"card":{"pan":"4242424242424242","exp_month":12,"exp_year":2030}}`))
	if a.status != http.StatusCreated {
		t.Fatalf("payment: %s", a)
	}
	id := a.header.Get("X-Request-Id")
	decided := 0
	for _, line := range strings.Split(strings.TrimSpace(e.logs.take()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == "payment decided" {
			decided++
		}
		if rec["request_id"] != id {
			t.Errorf("log line without the request's id %s: %s", id, line)
		}
	}
	if decided != 1 {
		t.Fatalf("%d 'payment decided' lines; want 1", decided)
	}
}

// A manager's actions log with their request's id too: the emergency
// stop's change and a bank taken out of service and back.
func TestManagerActionsLogWithTheRequestID(t *testing.T) {
	e := newAPIEnv(t, slog.LevelInfo)
	for _, tc := range []struct{ method, path, body, msg string }{
		{"PUT", "/v1/estop", `{"state":"pause","reason":"count the till"}`, "emergency stop changed"},
		{"POST", "/v1/gateways/bank-a/disable", `{"reason":"wrong key"}`, "bank disabled by a manager"},
		{"POST", "/v1/gateways/bank-a/enable", `{"reason":"key fixed"}`, "bank enabled"},
	} {
		e.logs.take()
		a := e.do(tc.method, tc.path, e.manager, "", []byte(tc.body))
		if a.status != http.StatusOK {
			t.Fatalf("%s %s: %s", tc.method, tc.path, a)
		}
		id, seen := a.header.Get("X-Request-Id"), false
		for _, line := range strings.Split(strings.TrimSpace(e.logs.take()), "\n") {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("log line %q: %v", line, err)
			}
			seen = seen || rec["msg"] == tc.msg
			if rec["request_id"] != id {
				t.Errorf("%s %s: a log line without the request's id %s: %s", tc.method, tc.path, id, line)
			}
		}
		if !seen {
			t.Errorf("%s %s: no %q line", tc.method, tc.path, tc.msg)
		}
	}
}

// A method a route does not take is 405 with the methods it does take in
// Allow (RFC 9110), as problem+json.
func TestMethodNotAllowedSaysWhatIs(t *testing.T) {
	e := newAPIEnv(t, slog.LevelWarn)
	order := e.fixture(t, "order")
	for _, tc := range []struct{ method, path, allow string }{
		{"DELETE", "/v1/orders", "POST"},
		{"PUT", "/v1/orders/" + order, "GET"},
		{"GET", "/v1/orders/" + order + "/deliver", "POST"},
		{"POST", "/v1/estop", "GET, PUT"},
		{"DELETE", "/healthz", "GET"},
	} {
		a := e.do(tc.method, tc.path, e.manager, "", nil)
		if a.status != http.StatusMethodNotAllowed || a.header.Get("Allow") != tc.allow ||
			a.header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s %s: %d Allow %q (%s); want 405 Allow %q", tc.method, tc.path, a.status, a.header.Get("Allow"), a.header.Get("Content-Type"), tc.allow)
		}
	}
}

// The 400/422 rule (docs/day-two.md): a request that does not fit the
// route's shape is 400; one that fits but a money, card or state rule
// refuses is 422.
func TestBadRequestOrUnprocessable(t *testing.T) {
	e := newAPIEnv(t, slog.LevelWarn)
	order := e.fixture(t, "order")
	for _, tc := range []struct {
		name, path, body string
		status           int
		code, detail     string
	}{
		{"QuantityOutOfRange", "/v1/orders", `{"channel":"walk_in","currency":"USD","lines":[{"sku":"A","quantity":1,"unit_amount":1},{"sku":"B","quantity":0,"unit_amount":1}]}`,
			400, "invalid_request", "lines[1].quantity is out of range"},
		{"QuantityBeyondInt64", "/v1/orders", `{"channel":"walk_in","currency":"USD","lines":[{"sku":"A","quantity":1,"unit_amount":1},{"sku":"B","quantity":99999999999999999999,"unit_amount":1}]}`,
			400, "invalid_json", "lines[1].quantity is out of range"},
		{"MissingUnitAmount", "/v1/orders", `{"channel":"walk_in","currency":"USD","lines":[{"sku":"A","quantity":1}]}`,
			400, "invalid_request", "lines[0].unit_amount is required"},
		{"UnknownChannel", "/v1/orders", `{"channel":"drive_thru","currency":"USD","lines":[{"sku":"A","quantity":1,"unit_amount":1}]}`,
			400, "invalid_request", "channel"},
		{"BadCurrency", "/v1/orders", `{"channel":"walk_in","currency":"XXQ","lines":[{"sku":"A","quantity":1,"unit_amount":1}]}`,
			422, "invalid_currency", "ISO 4217"},
		{"BeyondBalance", "/v1/orders/" + order + "/payments", `{"method":"cash","amount":999999}`,
			422, "amount_exceeds_balance", "balance"},
		{"BadCard", "/v1/orders/" + order + "/payments", `{"method":"card","amount":100,"card":{"pan":"4242424242424241","exp_month":12,"exp_year":2030}}`,
			422, "invalid_card", "not valid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := e.do("POST", tc.path, e.terminal, e.key(), []byte(tc.body))
			var p struct{ Code, Detail string }
			json.Unmarshal(a.body, &p)
			if a.status != tc.status || p.Code != tc.code || !strings.Contains(p.Detail, tc.detail) {
				t.Fatalf("got %s; want %d %s with %q", a, tc.status, tc.code, tc.detail)
			}
		})
	}
}

// A manager's token may take a payment (a manager at the till, or at the
// back office): the payment names the manager's device as its terminal.
func TestAManagerMayTakeAPayment(t *testing.T) {
	e := newAPIEnv(t, slog.LevelWarn)
	a := e.do("POST", "/v1/orders", e.manager, e.key(),
		[]byte(`{"channel":"walk_in","currency":"USD","lines":[{"sku":"A","quantity":1,"unit_amount":700}]}`))
	var o struct{ ID string }
	if a.status != http.StatusCreated || json.Unmarshal(a.body, &o) != nil {
		t.Fatalf("order by a manager: %s", a)
	}
	a = e.do("POST", "/v1/orders/"+o.ID+"/payments", e.manager, e.key(), fmt.Appendf(nil, `{"method":"cash","amount":700}`))
	var p struct {
		Status     string `json:"status"`
		TerminalID string `json:"terminal_id"`
	}
	if a.status != http.StatusCreated || json.Unmarshal(a.body, &p) != nil || p.Status != "captured" || p.TerminalID != "boss" {
		t.Fatalf("payment by a manager: %s; want 201 captured by boss", a)
	}
}

func (e *fuzzEnv) doCT(method, path, token, key, contentType string, body []byte) fuzzAnswer {
	req := httptest.NewRequest(method, path, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	w := httptest.NewRecorder()
	e.handler.ServeHTTP(w, req)
	return fuzzAnswer{status: w.Code, header: w.Header(), body: w.Body.Bytes()}
}

func problemCode(t *testing.T, a fuzzAnswer) (string, string) {
	t.Helper()
	var p struct {
		Code      string `json:"code"`
		Detail    string `json:"detail"`
		RequestID string `json:"request_id"`
	}
	if a.header.Get("Content-Type") != "application/problem+json" || json.Unmarshal(a.body, &p) != nil || p.RequestID == "" {
		t.Fatalf("not a problem with a request id: %s", a)
	}
	return p.Code, p.Detail
}

// Hostile input is refused with a clear 4xx and changes nothing: a key
// said twice, a body that is not declared JSON, a card number as the
// Idempotency-Key, a string past its limit.
func TestHostileInputIsRefusedAndChangesNothing(t *testing.T) {
	e := newAPIEnv(t, slog.LevelWarn)
	order := e.fixture(t, "order")
	paid := func() float64 {
		a := e.do("GET", "/v1/orders/"+order, e.terminal, "", nil)
		var o map[string]any
		json.Unmarshal(a.body, &o)
		return o["paid_amount"].(float64)
	}

	t.Run("DuplicateKey", func(t *testing.T) {
		a := e.do("POST", "/v1/orders/"+order+"/payments", e.terminal, e.key(), []byte(`{"method":"cash","amount":null,"amount":900}`))
		if code, detail := problemCode(t, a); a.status != 400 || code != "duplicate_key" || !strings.Contains(detail, `"amount"`) {
			t.Fatalf("got %s; want 400 duplicate_key naming amount", a)
		}
		a = e.do("POST", "/v1/orders", e.terminal, e.key(), []byte(`{"channel":"walk_in","currency":"USD","lines":[{"sku":"A","quantity":1,"unit_amount":1,"sku":"B"}]}`))
		if code, detail := problemCode(t, a); a.status != 400 || code != "duplicate_key" || !strings.Contains(detail, "lines[0].sku") {
			t.Fatalf("got %s; want 400 duplicate_key naming lines[0].sku", a)
		}
		if got := paid(); got != 0 {
			t.Fatalf("paid %v after refused payments", got)
		}
	})
	t.Run("NotJSON", func(t *testing.T) {
		key := e.key()
		body := []byte(`{"method":"cash","amount":100}`)
		a := e.doCT("POST", "/v1/orders/"+order+"/payments", e.terminal, key, "application/x-www-form-urlencoded", body)
		if code, _ := problemCode(t, a); a.status != 415 || code != "unsupported_media_type" {
			t.Fatalf("got %s; want 415", a)
		}
		if got := paid(); got != 0 {
			t.Fatalf("paid %v after a refused payment", got)
		}
		// The refusal was not kept under the key: the same request as
		// JSON is taken, not answered 415 again.
		a = e.doCT("POST", "/v1/orders/"+order+"/payments", e.terminal, key, "application/json; charset=utf-8", body)
		if a.status != 201 || a.header.Get("Idempotent-Replayed") != "" {
			t.Fatalf("the same key as JSON: %s", a)
		}
		a = e.doCT("PUT", "/v1/estop", e.manager, "", "text/plain", []byte(`{"state":"go"}`))
		if code, _ := problemCode(t, a); a.status != 415 || code != "unsupported_media_type" {
			t.Fatalf("estop as text/plain: %s; want 415", a)
		}
	})
	t.Run("CardNumberAsKey", func(t *testing.T) {
		a := e.do("POST", "/v1/orders", e.terminal, "4242 4242 4242 4242", []byte(`{"channel":"walk_in","currency":"USD","lines":[{"sku":"A","quantity":1,"unit_amount":1}]}`))
		if code, _ := problemCode(t, a); a.status != 400 || code != "invalid_idempotency_key" || strings.Contains(string(a.body), "4242424242424242") {
			t.Fatalf("got %s; want 400 invalid_idempotency_key", a)
		}
	})
	t.Run("TooLong", func(t *testing.T) {
		a := e.do("POST", "/v1/orders", e.terminal, e.key(), fmt.Appendf(nil, `{"channel":"walk_in","currency":"USD","lines":[{"sku":"A","quantity":1,"unit_amount":1},{"sku":"B","description":%q,"quantity":1,"unit_amount":1}]}`, strings.Repeat("x", 501)))
		if code, detail := problemCode(t, a); a.status != 400 || code != "invalid_request" || !strings.Contains(detail, "lines[1].description is too long") {
			t.Fatalf("got %s; want 400 naming lines[1].description", a)
		}
		a = e.do("PUT", "/v1/estop", e.manager, "", fmt.Appendf(nil, `{"state":%q}`, strings.Repeat("s", 1<<19)))
		if a.status != 400 {
			t.Fatalf("a 512 KiB state: %s; want 400 (and stop engaged)", a)
		}
		a = e.do("GET", "/v1/audit?action=estop.stop&limit=1", e.manager, "", nil)
		if len(a.body) > 4096 || !strings.Contains(string(a.body), "stop") {
			t.Fatalf("the audit log of a 512 KiB state is %d bytes: %.300s", len(a.body), a.body)
		}
	})
}
