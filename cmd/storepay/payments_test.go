package main

import (
	"database/sql"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"storepay/gateway/banksim"
	"storepay/migrations"
)

func TestAuthentication(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	wantProblem(t, s.call("GET", "/v1/payments", "", "", nil), 401, "unauthorized")
	wantProblem(t, s.call("GET", "/v1/payments", "sp_nope", "", nil), 401, "unauthorized")
	wantProblem(t, s.call("GET", "/v1/gateways", s.terminal, "", nil), 403, "forbidden")
	must(t, s.call("GET", "/v1/gateways", s.manager, "", nil), 200)
	must(t, s.call("GET", "/healthz", "", "", nil), 200)
	must(t, s.call("GET", "/readyz", "", "", nil), 200)
	if r := s.call("GET", "/metrics", "", "", nil); r.status != 200 || !strings.Contains(string(r.raw), "go_goroutines") {
		t.Fatalf("metrics: %d", r.status)
	}
}

func TestRequestID(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	r := s.get("/v1/payments")
	if !strings.HasPrefix(r.header.Get("X-Request-Id"), "req_") {
		t.Fatalf("no request id: %v", r.header)
	}
	req := s.call("GET", "/healthz", "", "", nil)
	if req.header.Get("X-Request-Id") == "" {
		t.Fatal("no request id on /healthz")
	}
	// The client's id is echoed: any printable ASCII, spaces included.
	for _, id := range []string{"7d3c9a4e-1b2f-4c55-9a0e-0d9f3c2b1a00", "lane 3 / sale 42", strings.Repeat("x", 255)} {
		hreq, _ := http.NewRequest("GET", s.url+"/v1/payments", nil)
		hreq.Header.Set("Authorization", "Bearer "+s.terminal)
		hreq.Header.Set("X-Request-Id", id)
		res, err := http.DefaultClient.Do(hreq)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if got := res.Header.Get("X-Request-Id"); got != id {
			t.Errorf("sent X-Request-Id %q, got back %q", id, got)
		}
	}
}

// terminal_id is the token's device, never what a body says: a body that
// names another terminal is not refused, and not believed.
func TestTerminalIDComesFromTheToken(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	body := cardBody(500, visa, map[string]any{"terminal_id": "lane-99"})
	p := must(t, s.post("/v1/orders/"+s.order(500)+"/payments", body), 201)
	if p.str("terminal_id") != "lane-3" {
		t.Fatalf("terminal_id %q, want the token's lane-3", p.str("terminal_id"))
	}
	must(t, s.post("/v1/orders", map[string]any{"channel": "walk_in", "currency": "USD", "terminal_id": "lane-99",
		"lines": []map[string]any{{"sku": "A", "description": "a", "quantity": 1, "unit_amount": 100}}}), 201)
}

func TestOrderLifecycle(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	r := must(t, s.post("/v1/orders", map[string]any{"channel": "phone", "currency": "USD",
		"lines": []map[string]any{{"sku": "LATTE-L", "description": "Latte large", "quantity": 2, "unit_amount": 450},
			{"sku": "MUFFIN", "description": "Muffin", "quantity": 1, "unit_amount": 300}}}), 201)
	id := r.str("id")
	if r.num("total_amount") != 1200 || r.str("status") != "open" || r.num("paid_amount") != 0 || r.str("channel") != "phone" {
		t.Fatalf("order: %s", r)
	}
	for _, k := range []string{"id", "status", "channel", "currency", "lines", "total_amount", "paid_amount", "created_at"} {
		if _, ok := r.body[k]; !ok {
			t.Errorf("order lacks %q", k)
		}
	}
	wantProblem(t, s.post("/v1/orders/"+id+"/deliver", nil), 409, "order_not_paid")
	// Beyond the open balance is amount_exceeds_balance, however far.
	for _, amount := range []int64{1201, 99_999_999_999_999, 1 << 62} {
		wantProblem(t, s.post("/v1/orders/"+id+"/payments", map[string]any{"method": "cash", "amount": amount}), 422, "amount_exceeds_balance")
		wantProblem(t, s.post("/v1/orders/"+id+"/payments", cardBody(amount, visa, nil)), 422, "amount_exceeds_balance")
	}
	wantProblem(t, s.post("/v1/orders/"+id+"/payments", map[string]any{"method": "cash", "amount": 0}), 422, "invalid_amount")
	must(t, s.post("/v1/orders/"+id+"/payments", map[string]any{"method": "cash", "amount": 500}), 201)
	if o := s.get("/v1/orders/" + id); o.str("status") != "open" || o.num("paid_amount") != 500 {
		t.Fatalf("after part payment: %s", o)
	}
	p := must(t, s.post("/v1/orders/"+id+"/payments", cardBody(700, visa, nil)), 201)
	if p.str("status") != "captured" || p.str("mode") != "online" || p.str("gateway") != "bank-a" || p.str("terminal_id") != "lane-3" {
		t.Fatalf("card payment: %s", p)
	}
	if o := s.get("/v1/orders/" + id); o.str("status") != "paid" || o.num("paid_amount") != 1200 {
		t.Fatalf("split tender: %s", o)
	}
	// A paid order's open balance is 0.
	wantProblem(t, s.post("/v1/orders/"+id+"/payments", map[string]any{"method": "cash", "amount": 1}), 422, "amount_exceeds_balance")
	must(t, s.post("/v1/orders/"+id+"/deliver", nil), 200)
	wantProblem(t, s.post("/v1/orders/"+id+"/payments", map[string]any{"method": "cash", "amount": 1}), 422, "amount_exceeds_balance")
	if o := s.get("/v1/orders/" + id); o.str("status") != "delivered" {
		t.Fatalf("deliver: %s", o)
	}
	wantProblem(t, s.post("/v1/orders/"+id+"/cancel", nil), 409, "order_delivered")
	wantProblem(t, s.get("/v1/orders/ord_missing"), 404, "order_not_found")
}

func TestBadInputChangesNothing(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	id := s.order(900)
	for _, tc := range []struct {
		name   string
		path   string
		body   any
		status int
		code   string
	}{
		{"MalformedJSON", "/v1/orders", `{"channel":`, 400, "invalid_json"},
		{"UnknownField", "/v1/orders", `{"channel":"walk_in","currency":"USD","lines":[],"extra":1}`, 400, "unknown_field"},
		{"KeyInAnotherCase", "/v1/orders", `{"Channel":"walk_in","currency":"USD","lines":[{"sku":"A","quantity":1,"unit_amount":1}]}`, 400, "unknown_field"},
		{"NestedKeyInAnotherCase", "/v1/orders/" + id + "/payments", `{"method":"card","amount":100,"card":{"PAN":"` + visa + `","exp_month":12,"exp_year":2030}}`, 400, "unknown_field"},
		{"WrongType", "/v1/orders", `{"channel":"walk_in","currency":"USD","lines":"x"}`, 400, "invalid_json"},
		{"BadChannel", "/v1/orders", `{"channel":"drone","currency":"USD","lines":[{"sku":"A","quantity":1,"unit_amount":1}]}`, 400, "invalid_request"},
		{"BadCurrency", "/v1/orders", `{"channel":"walk_in","currency":"XYZ","lines":[{"sku":"A","quantity":1,"unit_amount":1}]}`, 422, "invalid_currency"},
		{"TooLarge", "/v1/orders", `{"channel":"` + strings.Repeat("x", 1<<20) + `"}`, 400, "body_too_large"},
		{"Luhn", "/v1/orders/" + id + "/payments", cardBody(100, "4242424242424241", nil), 422, "invalid_card"},
		{"Expired", "/v1/orders/" + id + "/payments", map[string]any{"method": "card", "amount": 100,
			"card": map[string]any{"pan": visa, "exp_month": 1, "exp_year": 2020}}, 422, "expired_card"},
		{"Currency", "/v1/orders/" + id + "/payments", cardBody(100, visa, map[string]any{"currency": "EUR"}), 422, "currency_mismatch"},
		{"OverBalance", "/v1/orders/" + id + "/payments", cardBody(901, visa, nil), 422, "amount_exceeds_balance"},
		{"NoCard", "/v1/orders/" + id + "/payments", map[string]any{"method": "card", "amount": 100}, 400, "invalid_request"},
		{"AmountType", "/v1/orders/" + id + "/payments", `{"method":"cash","amount":"100"}`, 400, "invalid_json"},
		{"FractionalAmount", "/v1/orders/" + id + "/payments", `{"method":"cash","amount":1.5}`, 400, "invalid_json"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := s.post(tc.path, tc.body)
			wantProblem(t, r, tc.status, tc.code)
			if strings.Contains(string(r.raw), visa) {
				t.Fatalf("answer carries the card number: %s", r.raw)
			}
		})
	}
	if ps := s.get("/v1/payments"); len(ps.body["data"].([]any)) != 0 {
		t.Fatalf("bad input created payments: %s", ps)
	}
	if o := s.get("/v1/orders/" + id); o.num("paid_amount") != 0 || o.str("status") != "open" {
		t.Fatalf("bad input changed the order: %s", o)
	}
}

func TestCardSaleChargesOnceAndHidesPAN(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b})
	id := s.order(900)
	r := must(t, s.post("/v1/orders/"+id+"/payments", cardBody(900, visa, nil)), 201)
	if r.str("status") != "captured" || r.num("captured_amount") != 900 || r.str("card_last4") != "4242" || r.str("auth_code") == "" {
		t.Fatalf("sale: %s", r)
	}
	for _, k := range []string{"id", "order_id", "method", "status", "mode", "gateway", "amount", "tip_amount",
		"captured_amount", "currency", "auth_code", "decline_code", "card_last4", "terminal_id", "created_at"} {
		if _, ok := r.body[k]; !ok {
			t.Errorf("payment lacks %q", k)
		}
	}
	if strings.Contains(string(r.raw), visa) {
		t.Fatal("response carries the PAN")
	}
	if n := b.sim.Ledger().ChargesFor(r.str("id")); n != 1 {
		t.Fatalf("bank charged %d times", n)
	}
	// Nothing of the card is kept but brand, last4 and the fingerprint.
	var sealed int
	s.app.DB.Read().QueryRow(`SELECT count(*) FROM payments WHERE card_sealed IS NOT NULL`).Scan(&sealed)
	if sealed != 0 {
		t.Fatalf("%d payments still hold sealed card data after their outcome", sealed)
	}
}

func TestDeclines(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	for pan, code := range map[string]string{"4000000000000002": "do_not_honor", "4000000000009995": "insufficient_funds",
		"4000000000000069": "expired_card", "4000000000009979": "lost_or_stolen"} {
		id := s.order(500)
		r := must(t, s.post("/v1/orders/"+id+"/payments", cardBody(500, pan, nil)), 201)
		if r.str("status") != "declined" || r.str("decline_code") != code || r.str("auth_code") != "" {
			t.Fatalf("%s: %s", pan, r)
		}
		if o := s.get("/v1/orders/" + id); o.num("paid_amount") != 0 {
			t.Fatalf("a decline paid the order: %s", o)
		}
		// The declined amount is free again.
		must(t, s.post("/v1/orders/"+id+"/payments", map[string]any{"method": "cash", "amount": 500}), 201)
	}
}

func TestPreAuthCaptureWithTip(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b})
	id := s.order(1000)
	p := must(t, s.post("/v1/orders/"+id+"/payments", cardBody(1000, visa, map[string]any{"capture": false})), 201)
	pid := p.str("id")
	if p.str("status") != "authorized" || p.num("captured_amount") != 0 {
		t.Fatalf("pre-auth: %s", p)
	}
	if o := s.get("/v1/orders/" + id); o.str("status") != "paid" {
		t.Fatalf("an authorized payment covers the order: %s", o)
	}
	wantProblem(t, s.post("/v1/payments/"+pid+"/capture", map[string]any{"amount": 1000, "tip_amount": 201}), 422, "capture_exceeds_authorization")
	c := must(t, s.post("/v1/payments/"+pid+"/capture", map[string]any{"amount": 1000, "tip_amount": 150}), 200)
	if c.str("status") != "captured" || c.num("captured_amount") != 1150 || c.num("tip_amount") != 150 {
		t.Fatalf("capture: %s", c)
	}
	if a, _ := b.sim.Ledger().Find(c.str("id")); a.CapturedAmount != 0 {
		_ = a // Find takes the bank's id; checked below by reference
	}
	var captured int64
	for _, a := range b.sim.Ledger().Authorizations {
		if a.Reference == pid {
			captured = a.CapturedAmount
		}
	}
	if captured != 1150 {
		t.Fatalf("bank captured %d, want 1150", captured)
	}
	wantProblem(t, s.post("/v1/payments/"+pid+"/capture", map[string]any{"amount": 1000}), 409, "payment_not_authorized")
}

func TestCaptureBeforeAuthorizationFinished(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b}, func(c *Config) { c.Gateways[0].AttemptTimeout = Duration{5 * time.Second} })
	b.sim.SetFaults("", banksim.Faults{Latency: &banksim.Latency{Fixed: 3 * time.Second}})
	id := s.order(1000)
	done := make(chan resp)
	go func() {
		done <- s.post("/v1/orders/"+id+"/payments", cardBody(1000, visa, map[string]any{"capture": false}))
	}()
	var pid string
	waitFor(t, "the payment to be written ahead", 5*time.Second, func() bool {
		ps := s.get("/v1/payments?status=pending")
		if d, _ := ps.body["data"].([]any); len(d) == 1 {
			pid = d[0].(map[string]any)["id"].(string)
			return true
		}
		return false
	})
	wantProblem(t, s.post("/v1/payments/"+pid+"/capture", map[string]any{"amount": 1000}), 409, "payment_not_authorized")
	b.sim.ClearFaults()
	if r := <-done; r.str("status") != "authorized" {
		t.Fatalf("authorization: %s", r)
	}
	if p := s.get("/v1/payments/" + pid); p.str("status") != "authorized" {
		t.Fatalf("the early capture changed the payment: %s", p)
	}
}

func TestVoidAndRefund(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b})

	id := s.order(800)
	p := must(t, s.post("/v1/orders/"+id+"/payments", cardBody(800, visa, map[string]any{"capture": false})), 201)
	v := must(t, s.post("/v1/payments/"+p.str("id")+"/void", nil), 200)
	if v.str("status") != "voided" {
		t.Fatalf("void: %s", v)
	}
	if n := b.sim.Ledger().ChargesFor(p.str("id")); n != 0 {
		t.Fatalf("bank still holds %d approvals after the void", n)
	}
	if o := s.get("/v1/orders/" + id); o.str("status") != "open" || o.num("paid_amount") != 0 {
		t.Fatalf("void reopens the order: %s", o)
	}

	id = s.order(1000)
	p = must(t, s.post("/v1/orders/"+id+"/payments", cardBody(1000, visa, nil)), 201)
	pid := p.str("id")
	r := must(t, s.post("/v1/payments/"+pid+"/refunds", map[string]any{"amount": 300}), 201)
	if r.str("status") != "partially_refunded" || r.num("refunded_amount") != 300 {
		t.Fatalf("partial refund: %s", r)
	}
	wantProblem(t, s.post("/v1/payments/"+pid+"/refunds", map[string]any{"amount": 701}), 422, "refund_exceeds_capture")
	r = must(t, s.post("/v1/payments/"+pid+"/refunds", map[string]any{"amount": 700}), 201)
	if r.str("status") != "refunded" || r.num("refunded_amount") != 1000 {
		t.Fatalf("full refund: %s", r)
	}
	var refunded int64
	for _, rf := range b.sim.Ledger().Refunds {
		refunded += rf.Amount
	}
	if refunded != 1000 {
		t.Fatalf("bank refunded %d, want 1000", refunded)
	}
	wantProblem(t, s.post("/v1/payments/"+pid+"/refunds", map[string]any{"amount": 1}), 409, "payment_not_captured")

	// A refund of an authorized payment is refused and changes nothing.
	id = s.order(500)
	p = must(t, s.post("/v1/orders/"+id+"/payments", cardBody(500, visa, map[string]any{"capture": false})), 201)
	wantProblem(t, s.post("/v1/payments/"+p.str("id")+"/refunds", map[string]any{"amount": 100}), 409, "payment_not_captured")
	if q := s.get("/v1/payments/" + p.str("id")); q.str("status") != "authorized" {
		t.Fatalf("refused refund changed the payment: %s", q)
	}
}

func TestCancelVoidsWhatItCan(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b})
	id := s.order(1000)
	must(t, s.post("/v1/orders/"+id+"/payments", map[string]any{"method": "cash", "amount": 400}), 201)
	card := must(t, s.post("/v1/orders/"+id+"/payments", cardBody(600, visa, nil)), 201)
	o := must(t, s.post("/v1/orders/"+id+"/cancel", nil), 200)
	if o.str("status") != "cancelled" || o.num("paid_amount") != 0 {
		t.Fatalf("cancel: %s", o)
	}
	for _, p := range o.body["payments"].([]any) {
		if st := p.(map[string]any)["status"]; st != "voided" {
			t.Fatalf("payment left %v after cancel: %s", st, o)
		}
	}
	if n := b.sim.Ledger().ChargesFor(card.str("id")); n != 0 {
		t.Fatalf("card still charged after cancel (%d)", n)
	}
	wantProblem(t, s.post("/v1/orders/"+id+"/deliver", nil), 409, "order_not_paid")
}

func TestListPaymentsForARestartedTerminal(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	id := s.order(3000)
	var ids []string
	for _, amt := range []int64{1000, 1000} {
		ids = append(ids, must(t, s.post("/v1/orders/"+id+"/payments", cardBody(amt, visa, nil)), 201).str("id"))
	}
	must(t, s.post("/v1/orders/"+id+"/payments", cardBody(1000, "4000000000000002", nil)), 201)
	r := must(t, s.get("/v1/payments?terminal_id=lane-3&status=captured"), 200)
	data := r.body["data"].([]any)
	if len(data) != 2 || data[0].(map[string]any)["id"] != ids[1] || data[1].(map[string]any)["id"] != ids[0] {
		t.Fatalf("want both captured payments, newest first: %s", r)
	}
	if r := s.get("/v1/payments?terminal_id=lane-9"); len(r.body["data"].([]any)) != 0 {
		t.Fatalf("other terminal: %s", r)
	}
	wantProblem(t, s.get("/v1/payments?status=bogus"), 400, "invalid_request")
}

// The contract's lists are plain {"data": [...]}: a client that does not
// page gets every payment and every queue record (up to 10,000), not the
// first hundred; has_more, limit and offset page past that.
func TestListsAnswerEverythingUnlessPaged(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b}, func(c *Config) { c.Forwarding.Interval = Duration{-1} })
	const n = 130
	for i := range n {
		amount := int64(100 + i)
		must(t, s.post("/v1/orders/"+s.order(amount)+"/payments", cardBody(amount, visa, map[string]any{"offline_behavior": "force_offline"})), 201)
	}
	ids := func(r resp) []string {
		var out []string
		for _, d := range r.body["data"].([]any) {
			out = append(out, d.(map[string]any)["id"].(string))
		}
		return out
	}
	for _, path := range []string{"/v1/payments", "/v1/payments?status=stored", "/v1/saf", "/v1/saf?status=queued"} {
		all := must(t, s.mgr("GET", path, nil), 200)
		if got := len(ids(all)); got != n || all.body["has_more"] != false {
			t.Fatalf("GET %s lists %d with has_more %v, want all %d", path, got, all.body["has_more"], n)
		}
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		first := must(t, s.mgr("GET", path+sep+"limit=100", nil), 200)
		rest := must(t, s.mgr("GET", path+sep+"limit=100&offset=100", nil), 200)
		if first.body["has_more"] != true || rest.body["has_more"] != false {
			t.Fatalf("GET %s: has_more %v then %v, want true then false", path, first.body["has_more"], rest.body["has_more"])
		}
		if paged := append(ids(first), ids(rest)...); !slices.Equal(paged, ids(all)) {
			t.Fatalf("GET %s: the two pages do not make the whole list", path)
		}
	}
	wantProblem(t, s.mgr("GET", "/v1/saf?limit=10001", nil), 400, "invalid_request")
}

func TestIdempotency(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b})
	id := s.order(900)
	path := "/v1/orders/" + id + "/payments"
	body := cardBody(900, visa, nil)

	wantProblem(t, s.call("POST", path, s.terminal, "", body), 400, "idempotency_key_required")
	wantProblem(t, s.call("POST", path, s.terminal, " ", body), 400, "idempotency_key_required") // empty is missing
	first := must(t, s.call("POST", path, s.terminal, "pay-1", body), 201)
	if first.header.Get("Idempotent-Replayed") != "" {
		t.Fatal("first answer marked replayed")
	}
	for _, key := range []string{"pay-1", `"pay-1"`} {
		again := must(t, s.call("POST", path, s.terminal, key, body), 201)
		if again.header.Get("Idempotent-Replayed") != "true" || string(again.raw) != string(first.raw) {
			t.Fatalf("replay with %s: %s %v", key, again, again.header)
		}
	}
	wantProblem(t, s.call("POST", path, s.terminal, "pay-1", cardBody(800, visa, nil)), 422, "idempotency_key_reuse")
	if n := b.sim.Ledger().ChargesFor(first.str("id")); n != 1 {
		t.Fatalf("charged %d times", n)
	}
	// An error answer is replayed too.
	bad := s.call("POST", path, s.terminal, "pay-2", cardBody(5, visa, nil))
	wantProblem(t, bad, 422, "amount_exceeds_balance")
	if again := s.call("POST", path, s.terminal, "pay-2", cardBody(5, visa, nil)); again.status != 422 || string(again.raw) != string(bad.raw) {
		t.Fatalf("error replay: %s", again)
	}

	// After a restart the answer is still there.
	s.restart()
	again := must(t, s.call("POST", path, s.terminal, "pay-1", body), 201)
	if again.header.Get("Idempotent-Replayed") != "true" || string(again.raw) != string(first.raw) {
		t.Fatalf("replay after restart: %s", again)
	}
	if n := b.sim.Ledger().ChargesFor(first.str("id")); n != 1 {
		t.Fatalf("charged %d times after restart", n)
	}
}

func TestIdempotencyKeyInUse(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b}, func(c *Config) { c.Gateways[0].AttemptTimeout = Duration{5 * time.Second} })
	b.sim.SetFaults("", banksim.Faults{Latency: &banksim.Latency{Fixed: 10 * time.Second}})
	id := s.order(900)
	path := "/v1/orders/" + id + "/payments"
	done := make(chan resp)
	go func() { done <- s.call("POST", path, s.terminal, "slow-1", cardBody(900, visa, nil)) }()
	waitFor(t, "the bank call to start", 5*time.Second, func() bool { return b.sim.Ledger().InFlight > 0 })
	wantProblem(t, s.call("POST", path, s.terminal, "slow-1", cardBody(900, visa, nil)), 409, "idempotency_key_in_use")
	b.sim.ClearFaults()
	first := <-done
	must(t, first, 201)
	again := must(t, s.call("POST", path, s.terminal, "slow-1", cardBody(900, visa, nil)), 201)
	if string(again.raw) != string(first.raw) {
		t.Fatal("replay differs")
	}
}

func TestConcurrentPaymentsCannotOverpay(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b})
	id := s.order(1000)
	var wg sync.WaitGroup
	results := make([]resp, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = s.post("/v1/orders/"+id+"/payments", cardBody(1000, visa, nil))
		}()
	}
	wg.Wait()
	ok := 0
	for _, r := range results {
		switch {
		case r.status == 201 && r.str("status") == "captured":
			ok++
		case r.status == 422 && r.str("code") == "amount_exceeds_balance":
		default:
			t.Fatalf("unexpected answer %s", r)
		}
	}
	if ok != 1 {
		t.Fatalf("%d payments captured for one order total", ok)
	}
}

// Idempotency records are kept 72 hours, then pruned.
func TestIdempotencyRecordsArePrunedAfter72h(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	s.order(100)
	s.order(200)
	old := migrations.FormatTime(time.Now().Add(-73 * time.Hour))
	if err := s.app.DB.Update(t.Context(), func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE idempotency SET created_at = ? WHERE rowid = (SELECT min(rowid) FROM idempotency)`, old)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	n, err := s.app.Web.Prune(t.Context())
	if err != nil || n != 1 {
		t.Fatalf("pruned %d, %v; want exactly the record older than 72h", n, err)
	}
	var left int
	s.app.DB.Read().QueryRow(`SELECT count(*) FROM idempotency`).Scan(&left)
	if left != 1 {
		t.Fatalf("%d records left, want 1", left)
	}
}
