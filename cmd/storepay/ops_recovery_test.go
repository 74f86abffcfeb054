package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"storepay/gateway/banksim"
)

// An order is cancelled while its card payment's bank answers "not
// processed": the order is cancelled at once, and the void stays pending,
// retried with the same key until the bank takes it. The card is not left
// charged for a cancelled order.
func TestCancelWhileTheBankIsDownVoidsLater(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b})
	id := s.order(900)
	pid := must(t, s.post("/v1/orders/"+id+"/payments", cardBody(900, visa, nil)), 201).str("id")
	if err := b.sim.SetFaults("", banksim.Faults{NotProcessed: &banksim.Fault{}}); err != nil {
		t.Fatal(err)
	}
	if o := must(t, s.post("/v1/orders/"+id+"/cancel", nil), 200); o.str("status") != "cancelled" {
		t.Fatalf("cancel: %s", o)
	}
	if p := s.get("/v1/payments/" + pid); p.str("pending_op") != "cancel_void" {
		t.Fatalf("the void must stay pending while the bank does nothing: %s", p)
	}
	clearAll(t, b)
	s.waitPayment(pid, "voided")
	if n := b.sim.Ledger().ChargesFor(pid); n != 0 {
		t.Fatalf("card still charged %d times for a cancelled order", n)
	}
}

// A capture answered 503 bank_unavailable did nothing; the terminal
// repeats it with the same Idempotency-Key once the bank is back, and the
// capture is made (not answered 200 with nothing done).
func TestCaptureRepeatedAfterNothingWasDoneCaptures(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b})
	pid := must(t, s.post("/v1/orders/"+s.order(900)+"/payments", cardBody(900, visa, map[string]any{"capture": false})), 201).str("id")
	if err := b.sim.SetFaults("", banksim.Faults{NotProcessed: &banksim.Fault{}}); err != nil {
		t.Fatal(err)
	}
	body := map[string]any{"amount": 900, "tip_amount": 100}
	wantProblem(t, s.call("POST", "/v1/payments/"+pid+"/capture", s.terminal, "cap-1", body), 503, "bank_unavailable")
	clearAll(t, b)
	// A terminal retries a 409 payment_in_progress ("retry shortly"): the
	// resolver may be looking at the payment just then.
	var r resp
	waitFor(t, "the repeated capture to be answered", 10*time.Second, func() bool {
		r = s.call("POST", "/v1/payments/"+pid+"/capture", s.terminal, "cap-1", body)
		return r.status != 409 || r.str("code") != "payment_in_progress"
	})
	must(t, r, 200)
	if r.str("status") != "captured" || r.num("captured_amount") != 1000 {
		t.Fatalf("repeated capture: %s", r)
	}
	for _, a := range b.sim.Ledger().Authorizations {
		if a.Reference == pid && a.CapturedAmount != 1000 {
			t.Fatalf("bank holds %+v, want 1000 captured", a)
		}
	}
}

// The bank calls use up the payment's whole budget: the decision is still
// recorded and answered (stored, pinned to the bank that may hold it), not
// lost with the expired budget.
func TestPaymentIsDecidedWhenTheBankOutlivesTheBudget(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b}, func(c *Config) {
		c.Gateways[0].MaxAttempts = 10 // 10 attempts of 500 ms: longer than the budget
		c.PaymentBudget = Duration{time.Second}
	})
	id := s.order(900)
	if err := b.sim.SetFaults("", banksim.Faults{Blackhole: &banksim.Fault{}}); err != nil {
		t.Fatal(err)
	}
	r := must(t, s.post("/v1/orders/"+id+"/payments", cardBody(900, visa, nil)), 201)
	if r.str("status") != "stored" || r.str("gateway") != "bank-a" {
		t.Fatalf("payment: %s, want stored pinned to bank-a", r)
	}
}

// A capture whose bank calls outlive the operation's budget answers 503
// (the bank did not confirm; storepay keeps at it), not 500.
func TestCaptureOutlivingItsBudgetAnswers503(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b}, func(c *Config) { c.Gateways[0].MaxAttempts = 10 })
	s.app.Orders.OpBudget = time.Second
	pid := must(t, s.post("/v1/orders/"+s.order(900)+"/payments", cardBody(900, visa, map[string]any{"capture": false})), 201).str("id")
	if err := b.sim.SetFaults("", banksim.Faults{Blackhole: &banksim.Fault{}}); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, s.post("/v1/payments/"+pid+"/capture", map[string]any{"amount": 900}), 503, "bank_unavailable")
	if p := s.get("/v1/payments/" + pid); p.str("pending_op") != "capture" {
		t.Fatalf("the capture must stay pending: %s", p)
	}
}

// A capture left pending (its outcome unknown) is resumed by a repeat
// of its request, but its key sent with another amount, or to refund or
// void, is a reused key: refused with nothing done, not answered with the
// first capture's outcome.
func TestPendingCaptureKeyReusedForAnotherRequestIsRefused(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b}, func(c *Config) { c.Gateways[0].MaxAttempts = 10 })
	s.app.Orders.OpBudget = time.Second
	pid := must(t, s.post("/v1/orders/"+s.order(900)+"/payments", cardBody(900, visa, map[string]any{"capture": false})), 201).str("id")
	if err := b.sim.SetFaults("", banksim.Faults{Blackhole: &banksim.Fault{}}); err != nil {
		t.Fatal(err)
	}
	capture := func(body map[string]any) resp {
		return s.call("POST", "/v1/payments/"+pid+"/capture", s.terminal, "cap-1", body)
	}
	wantProblem(t, capture(map[string]any{"amount": 900}), 503, "bank_unavailable")
	wantProblem(t, capture(map[string]any{"amount": 800}), 422, "idempotency_key_reuse")
	wantProblem(t, capture(map[string]any{"amount": 900, "tip_amount": 50}), 422, "idempotency_key_reuse")
	wantProblem(t, s.call("POST", "/v1/payments/"+pid+"/void", s.terminal, "cap-1", map[string]any{}), 422, "idempotency_key_reuse")
	p := s.get("/v1/payments/" + pid)
	if p.str("pending_op") != "capture" || p.str("status") != "authorized" {
		t.Fatalf("the first capture must stay pending, unchanged: %s", p)
	}
	clearAll(t, b)
	var r resp
	waitFor(t, "the repeated capture to be answered", 10*time.Second, func() bool {
		r = capture(map[string]any{"amount": 900})
		return r.status != 409 && r.status != 503
	})
	must(t, r, 200)
	if r.str("status") != "captured" || r.num("captured_amount") != 900 {
		t.Fatalf("the repeated capture: %s", r)
	}
}

// A bank that did the capture (or the void) but answered 500 and keeps
// that 500 as the key's answer replays it to every repeat; storepay learns
// what was done from the bank's records (a lookup by the payment's
// reference) and finishes the operation, once.
func TestOperationDoneBehindAKeptServerErrorIsFoundByLookup(t *testing.T) {
	for _, op := range []string{"capture", "void"} {
		t.Run(op, func(t *testing.T) {
			b := startBank(t, "bank-a", 1)
			s := startStore(t, []*bank{b})
			pid := must(t, s.post("/v1/orders/"+s.order(900)+"/payments", cardBody(900, visa, map[string]any{"capture": false})), 201).str("id")
			if err := b.sim.SetFaults("", banksim.Faults{ErrorAfterApply: &banksim.Fault{Next: 1}}); err != nil {
				t.Fatal(err)
			}
			body := map[string]any{}
			if op == "capture" {
				body["amount"] = 900
			}
			wantProblem(t, s.post("/v1/payments/"+pid+"/"+op, body), 503, "bank_unavailable")
			want := map[string]string{"capture": "captured", "void": "voided"}[op]
			waitFor(t, "the resolver to find the "+op+" done", 10*time.Second, func() bool {
				p := s.get("/v1/payments/" + pid)
				return p.str("status") == want && p.str("pending_op") == ""
			})
			for _, a := range b.sim.Ledger().Authorizations {
				if a.Reference != pid {
					continue
				}
				if op == "capture" && a.CapturedAmount != 900 || op == "void" && a.Status != "reversed" {
					t.Fatalf("the bank holds %+v", a)
				}
			}
		})
	}
}

// The bank's lookups hang while it takes captures again. A capture left
// pending is finished by the resolver's repeat under its key: the lookup
// (tried only once repeats have not told) never stands in its way.
func TestHangingLookupDoesNotStarveTheRepeat(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	target, err := url.Parse(b.urls[0])
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(target)
	var lookupsHang atomic.Bool
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if lookupsHang.Load() && r.Method == http.MethodGet && r.URL.Path == "/v1/authorizations" {
			<-r.Context().Done()
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	b.urls = []string{front.URL}
	s := startStore(t, []*bank{b})
	s.app.Orders.OpBudget = 2 * time.Second
	pid := must(t, s.post("/v1/orders/"+s.order(900)+"/payments", cardBody(900, visa, map[string]any{"capture": false})), 201).str("id")
	if err := b.sim.SetFaults("", banksim.Faults{Blackhole: &banksim.Fault{}}); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, s.call("POST", "/v1/payments/"+pid+"/capture", s.terminal, "cap-1", map[string]any{"amount": 900}), 503, "bank_unavailable")
	lookupsHang.Store(true)
	clearAll(t, b)
	waitFor(t, "the resolver to finish the capture", 15*time.Second, func() bool {
		return s.get("/v1/payments/"+pid).str("status") == "captured"
	})
}

// A void whose 503 was not stored is finished by the resolver. Its key
// sent again for a capture is a reused key, not answered with the voided
// payment; the genuine repeat of the void still gets the voided payment.
// The key of the sale that made a payment is no capture's key either.
func TestFinishedOperationsKeyIsNotAnotherOperations(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b})
	pid := must(t, s.post("/v1/orders/"+s.order(900)+"/payments", cardBody(900, visa, map[string]any{"capture": false})), 201).str("id")
	if err := b.sim.SetFaults("", banksim.Faults{ErrorAfterApply: &banksim.Fault{Next: 1}}); err != nil {
		t.Fatal(err)
	}
	wantProblem(t, s.call("POST", "/v1/payments/"+pid+"/void", s.terminal, "k-void", map[string]any{}), 503, "bank_unavailable")
	waitFor(t, "the resolver to finish the void", 10*time.Second, func() bool {
		p := s.get("/v1/payments/" + pid)
		return p.str("status") == "voided" && p.str("pending_op") == ""
	})
	wantProblem(t, s.call("POST", "/v1/payments/"+pid+"/capture", s.terminal, "k-void", map[string]any{}), 422, "idempotency_key_reuse")
	if v := must(t, s.call("POST", "/v1/payments/"+pid+"/void", s.terminal, "k-void", map[string]any{}), 200); v.str("status") != "voided" {
		t.Fatalf("the void's repeat: %s", v)
	}

	sale := s.call("POST", "/v1/orders/"+s.order(700)+"/payments", s.terminal, "k-sale", cardBody(700, visa, nil))
	must(t, sale, 201)
	wantProblem(t, s.call("POST", "/v1/payments/"+sale.str("id")+"/refunds", s.terminal, "k-sale", map[string]any{"amount": 100}), 422, "idempotency_key_reuse")
}

// An order whose total would not fit is refused, not wrapped around.
func TestOrderTotalCannotOverflow(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	lines := make([]map[string]any, 19)
	for i := range lines {
		lines[i] = map[string]any{"sku": "GOLD", "quantity": 1_000_000, "unit_amount": 1_000_000_000_000}
	}
	wantProblem(t, s.post("/v1/orders", map[string]any{"channel": "walk_in", "currency": "USD", "lines": lines}), 422, "invalid_amount")
}

// A body-less POST sent with chunked encoding and no chunks is an empty
// body, as with Content-Length: 0: the cancel goes through.
func TestChunkedEmptyBodyIsEmpty(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	id := s.order(500)
	u, err := url.Parse(s.url)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST /v1/orders/%s/cancel HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nIdempotency-Key: chunked-1\r\n"+
		"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", id, u.Host, s.terminal)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(body), `"cancelled"`) {
		t.Fatalf("chunked empty cancel: %d %s", res.StatusCode, body)
	}
}

// An order is cancelled after the bank settled its card sale (the
// business day closed): the sale can no longer be voided, so what was
// captured is refunded. The customer does not pay for a cancelled order.
func TestCancelAfterSettlementRefunds(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b})
	id := s.order(900)
	pid := must(t, s.post("/v1/orders/"+id+"/payments", cardBody(900, visa, nil)), 201).str("id")
	for _, a := range b.sim.Ledger().Authorizations {
		if a.Reference == pid {
			if err := b.sim.CloseDay(a.BusinessDate); err != nil {
				t.Fatal(err)
			}
		}
	}
	if o := must(t, s.post("/v1/orders/"+id+"/cancel", nil), 200); o.str("status") != "cancelled" {
		t.Fatalf("cancel: %s", o)
	}
	p := s.waitPayment(pid, "refunded")
	if p.num("refunded_amount") != 900 {
		t.Fatalf("refunded: %s", p)
	}
	refunded := int64(0)
	for _, r := range b.sim.Ledger().Refunds {
		refunded += r.Amount
	}
	if refunded != 900 {
		t.Fatalf("the bank refunded %d of 900", refunded)
	}
}

// The request hashes kept to tell a repeat from a reused key are keyed:
// a plain SHA-256 of a card payment's body could be reversed by trying
// the card digits between the stored first six and last four.
func TestRequestHashesAreKeyed(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	id := s.order(900)
	body := cardBody(900, visa, nil)
	p := must(t, s.call("POST", "/v1/orders/"+id+"/payments", s.terminal, "pay-1", body), 201)
	canon, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	plain := sha256.Sum256(append([]byte("POST /v1/orders/"+id+"/payments\n"), canon...))
	var opHash, reqHash string
	if err := s.app.DB.Read().QueryRow(`SELECT op_hash FROM payments WHERE id = ?`, p.str("id")).Scan(&opHash); err != nil {
		t.Fatal(err)
	}
	if err := s.app.DB.Read().QueryRow(`SELECT request_hash FROM idempotency WHERE key = 'pay-1'`).Scan(&reqHash); err != nil {
		t.Fatal(err)
	}
	if opHash == "" || reqHash == "" || opHash == hex.EncodeToString(plain[:]) || reqHash == hex.EncodeToString(plain[:]) {
		t.Fatalf("stored hashes %q and %q: want keyed hashes, not the body's SHA-256", opHash, reqHash)
	}
	// The same request again is a repeat; with trailing data it is another
	// request under the same key.
	if r := must(t, s.call("POST", "/v1/orders/"+id+"/payments", s.terminal, "pay-1", body), 201); r.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("repeat not replayed: %s", r)
	}
	wantProblem(t, s.call("POST", "/v1/orders/"+id+"/payments", s.terminal, "pay-1", string(canon)+" junk"), 422, "idempotency_key_reuse")
}

// A refund repeated after its stored answer was pruned (72 hours) finds
// the refund it made by its key, and refunds nothing more.
func TestRefundRepeatedAfterItsAnswerWasPrunedRefundsOnce(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b})
	pid := must(t, s.post("/v1/orders/"+s.order(900)+"/payments", cardBody(900, visa, nil)), 201).str("id")
	must(t, s.call("POST", "/v1/payments/"+pid+"/refunds", s.terminal, "refund-1", map[string]any{"amount": 300}), 201)
	must(t, s.call("POST", "/v1/payments/"+pid+"/refunds", s.terminal, "refund-2", map[string]any{"amount": 300}), 201)
	s.exec(`DELETE FROM idempotency`)
	r := s.call("POST", "/v1/payments/"+pid+"/refunds", s.terminal, "refund-1", map[string]any{"amount": 300})
	if r.status >= 300 || r.num("refunded_amount") != 600 {
		t.Fatalf("repeat of refund-1: %s, want the payment with 600 refunded", r)
	}
	if n := len(b.sim.Ledger().Refunds); n != 2 {
		t.Fatalf("the bank made %d refunds, want 2", n)
	}
	// The same key on another payment is a reused key, not a repeat.
	other := must(t, s.post("/v1/orders/"+s.order(500)+"/payments", cardBody(500, visa, nil)), 201).str("id")
	wantProblem(t, s.call("POST", "/v1/payments/"+other+"/refunds", s.terminal, "refund-1", map[string]any{"amount": 100}), 422, "idempotency_key_reuse")
}

// Request hashes are keyed under the card key. After a restart with
// another card key, a repeat cannot be told by its hash: it is checked
// against the payment it made. The same request gets that payment back;
// another request under the key is still refused.
func TestRepeatAfterACardKeyChangeIsCheckedAgainstThePayment(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	id := s.order(900)
	body := cardBody(900, visa, nil)
	first := must(t, s.call("POST", "/v1/orders/"+id+"/payments", s.terminal, "pay-k", body), 201)
	s.restartWithCardKey(strings.Repeat("cd", 32))
	again := must(t, s.call("POST", "/v1/orders/"+id+"/payments", s.terminal, "pay-k", body), 201)
	if again.str("id") != first.str("id") || again.str("status") != "captured" {
		t.Fatalf("repeat after a card key change: %s, want payment %s", again, first.str("id"))
	}
	wantProblem(t, s.call("POST", "/v1/orders/"+s.order(500)+"/payments", s.terminal, "pay-k", cardBody(500, visa, nil)), 422, "idempotency_key_reuse")
	// That refusal did not replace the first answer.
	if again := must(t, s.call("POST", "/v1/orders/"+id+"/payments", s.terminal, "pay-k", body), 201); again.str("id") != first.str("id") {
		t.Fatalf("repeat after a refused reuse: %s, want payment %s", again, first.str("id"))
	}
}

// A capture keeps no record its key could be checked against: after a
// card key change its key, reused for another payment, is refused rather
// than capturing that payment.
func TestCaptureKeyReusedAfterACardKeyChangeIsRefused(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	p1 := must(t, s.post("/v1/orders/"+s.order(900)+"/payments", cardBody(900, visa, map[string]any{"capture": false})), 201).str("id")
	p2 := must(t, s.post("/v1/orders/"+s.order(900)+"/payments", cardBody(900, visa, map[string]any{"capture": false})), 201).str("id")
	must(t, s.call("POST", "/v1/payments/"+p1+"/capture", s.terminal, "cap-k", map[string]any{"amount": 900}), 200)
	s.restartWithCardKey(strings.Repeat("ef", 32))
	wantProblem(t, s.call("POST", "/v1/payments/"+p2+"/capture", s.terminal, "cap-k", map[string]any{"amount": 900}), 422, "idempotency_key_reuse")
	if p := s.get("/v1/payments/" + p2); p.str("status") != "authorized" {
		t.Fatalf("the other payment after a reused capture key: %s", p)
	}
}

// Hashes stored before they were keyed are erased from orders and
// payments (migration 0006): a repeat is checked against the record.
func TestRepeatWithAnErasedHashIsCheckedAgainstThePayment(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	id := s.order(900)
	body := cardBody(900, visa, nil)
	first := must(t, s.call("POST", "/v1/orders/"+id+"/payments", s.terminal, "pay-e", body), 201)
	s.exec(`UPDATE payments SET op_hash = ''`)
	s.exec(`DELETE FROM idempotency`)
	if again := must(t, s.call("POST", "/v1/orders/"+id+"/payments", s.terminal, "pay-e", body), 201); again.str("id") != first.str("id") {
		t.Fatalf("repeat: %s, want payment %s", again, first.str("id"))
	}
	s.exec(`DELETE FROM idempotency`)
	wantProblem(t, s.call("POST", "/v1/orders/"+s.order(5000)+"/payments", s.terminal, "pay-e", cardBody(5000, visa, nil)), 422, "idempotency_key_reuse")
}

// A pre-authorization captured with a tip, its request's hash erased: a
// repeat of the payment request is still recognised (the capture changed
// the amount and tip; the authorized total is what was asked).
func TestRepeatOfACapturedPreauthorizationIsRecognised(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	id := s.order(900)
	body := cardBody(900, visa, map[string]any{"capture": false})
	first := must(t, s.call("POST", "/v1/orders/"+id+"/payments", s.terminal, "pre-1", body), 201)
	must(t, s.post("/v1/payments/"+first.str("id")+"/capture", map[string]any{"amount": 800, "tip_amount": 100}), 200)
	s.exec(`UPDATE payments SET op_hash = ''`)
	s.exec(`DELETE FROM idempotency`)
	if again := must(t, s.call("POST", "/v1/orders/"+id+"/payments", s.terminal, "pre-1", body), 201); again.str("id") != first.str("id") {
		t.Fatalf("repeat: %s, want payment %s", again, first.str("id"))
	}
}

// After a card key change, a different payment request under the key of
// a pre-authorization (another card, a sale of the same total) is refused,
// and the true repeat still gets its payment.
func TestOtherPaymentUnderAKeyAfterACardKeyChangeIsRefused(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	id := s.order(1000)
	body := cardBody(900, visa, map[string]any{"tip_amount": 100, "capture": false})
	first := must(t, s.call("POST", "/v1/orders/"+id+"/payments", s.terminal, "pay-m", body), 201)
	s.restartWithCardKey(strings.Repeat("ab", 32))
	other := map[string]any{"method": "card", "amount": 1000, "capture": true,
		"card": map[string]any{"pan": "5555555555554444", "exp_month": 12, "exp_year": 2030}}
	wantProblem(t, s.call("POST", "/v1/orders/"+id+"/payments", s.terminal, "pay-m", other), 422, "idempotency_key_reuse")
	if again := must(t, s.call("POST", "/v1/orders/"+id+"/payments", s.terminal, "pay-m", body), 201); again.str("id") != first.str("id") {
		t.Fatalf("true repeat: %s, want payment %s", again, first.str("id"))
	}
}

// An order of 20.00 paid by a card sale, 5.00 of it refunded, is
// cancelled: the 15.00 the bank still holds is refunded too. Before the
// payment machine the order became cancelled while the bank kept 15.00
// captured and nothing retried (found by a new user; the simulator's
// workload now refunds and cancels so that it would find it).
func TestCancelAfterAPartialRefundReturnsTheRest(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b})
	id := s.order(2000)
	pid := must(t, s.post("/v1/orders/"+id+"/payments", cardBody(2000, visa, nil)), 201).str("id")
	if p := must(t, s.post("/v1/payments/"+pid+"/refunds", map[string]any{"amount": 500}), 201); p.str("status") != "partially_refunded" {
		t.Fatalf("refund: %s", p)
	}
	if o := must(t, s.post("/v1/orders/"+id+"/cancel", nil), 200); o.str("status") != "cancelled" {
		t.Fatalf("cancel: %s", o)
	}
	p := s.waitPayment(pid, "refunded")
	if p.num("refunded_amount") != 2000 || p.str("pending_op") != "" {
		t.Fatalf("after the cancel: %s", p)
	}
	var captured, refunded int64
	l := b.sim.Ledger()
	for _, a := range l.Authorizations {
		if a.Reference == pid {
			captured += a.CapturedAmount
		}
	}
	for _, r := range l.Refunds {
		refunded += r.Amount
	}
	if captured != 2000 || refunded != 2000 {
		t.Fatalf("the bank captured %d and refunded %d: it keeps %d of a cancelled order", captured, refunded, captured-refunded)
	}
}
