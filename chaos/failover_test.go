package chaos

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// where says which bank charged each payment, and fails the test if any
// payment was charged twice or at two banks.
func where(t *testing.T, banks ...*bank) map[string]string {
	t.Helper()
	at := map[string]string{}
	for _, b := range banks {
		for ref, n := range b.ledger(t).charges() {
			if n > 1 {
				t.Fatalf("%s charged %s %d times", b.name, ref, n)
			}
			if prev, ok := at[ref]; ok {
				t.Fatalf("%s charged at both %s and %s", ref, prev, b.name)
			}
			at[ref] = b.name
		}
	}
	return at
}

// The primary bank goes down (connections refused) for a while: traffic
// moves to the secondary at once, and returns to the primary when it is
// back, without a payment waiting.
func TestPrimaryDownThenBack(t *testing.T) {
	a, b := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	s := newStore(t, []gw{{bank: a}, {bank: b}}, nil)
	before := s.pay(500, nil)
	a.faults(t, "", `{"refuse":true}`)
	var during []string
	outage := time.Now()
	for time.Since(outage) < 3*time.Second { // "minutes", scaled down
		p := s.pay(500, nil)
		if p.str("status") != "captured" || p.str("gateway") != "bank-b" {
			t.Fatalf("during the outage: %s", p)
		}
		during = append(during, p.str("id"))
		time.Sleep(50 * time.Millisecond)
	}
	if st := s.gateways()["bank-a"]["state"]; st != "open" {
		t.Fatalf("bank-a breaker %v during the outage, want open", st)
	}
	m := string(s.call("GET", "/metrics", "", "", nil).raw)
	for _, want := range []string{`storepay_gateway_failovers_total{from="bank-a"`, `storepay_gateway_breaker_transitions_total{gateway="bank-a"`,
		`storepay_gateway_breaker_state{gateway="bank-a",`, `storepay_gateway_latency_seconds_bucket{gateway="bank-b"`,
		`storepay_gateway_attempts_total{gateway="bank-a"`} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	a.clear(t)
	waitFor(t, "traffic to return to bank-a", 10*time.Second, func() bool {
		return s.pay(500, nil).str("gateway") == "bank-a"
	})
	waitFor(t, "bank-a's breaker to close", 10*time.Second, func() bool {
		s.pay(500, nil)
		return s.gateways()["bank-a"]["state"] == "closed"
	})
	at := where(t, a, b)
	if at[before.str("id")] != "bank-a" {
		t.Fatalf("before the outage: charged at %q", at[before.str("id")])
	}
	for _, id := range during {
		if at[id] != "bank-b" {
			t.Fatalf("%s charged at %q during the outage", id, at[id])
		}
	}
}

// The primary answers, but slower than the attempt timeout. The payment
// caught in it has an unknown outcome at the primary, so it may not move:
// it is declined, and the approval the slow bank eventually makes is
// reversed. Once the breaker opens, payments go to the secondary. No
// payment is ever charged at both.
func TestPrimarySlowBeyondTimeout(t *testing.T) {
	a, b := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	s := newStore(t, []gw{{bank: a}, {bank: b}}, nil)
	a.faults(t, "", `{"latency":{"fixed":"1500ms"}}`)
	caught := s.pay(500, map[string]any{"offline_behavior": "require_online"})
	if caught.str("status") != "declined" || caught.str("decline_code") != "bank_unavailable" {
		t.Fatalf("payment caught in the slow bank: %s", caught)
	}
	next := s.pay(500, nil)
	if next.str("status") != "captured" || next.str("gateway") != "bank-b" {
		t.Fatalf("after the breaker opened: %s", next)
	}
	a.clear(t)
	waitFor(t, "the caught payment to be resolved", 15*time.Second, func() bool {
		p := s.get("/v1/payments/" + caught.str("id"))
		return p.status == 200 && p.str("pending_op") == ""
	})
	at := where(t, a, b)
	if got, ok := at[caught.str("id")]; ok {
		t.Fatalf("the declined payment is still charged at %s", got)
	}
	if at[next.str("id")] != "bank-b" {
		t.Fatalf("next payment charged at %q", at[next.str("id")])
	}
	if n := b.ledger(t).calls(b.urls[0], "POST /v1/authorizations"); n != 1 {
		t.Fatalf("bank-b saw %d authorizations, want only the one after the breaker opened", n)
	}
}

// The primary charges and then loses the answer. storepay must not send
// the payment to the healthy secondary: it repeats the request at the
// primary with the same key and learns the approval.
func TestPrimaryDropsResponseAfterCharging(t *testing.T) {
	a, b := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	s := newStore(t, []gw{{bank: a}, {bank: b}}, nil)
	var ids []string
	for i := 0; i < 5; i++ {
		a.faults(t, "", `{"drop_after_apply":{"next":1}}`)
		p := s.pay(700, nil)
		if p.str("status") != "captured" || p.str("gateway") != "bank-a" {
			t.Fatalf("payment %d: %s", i, p)
		}
		ids = append(ids, p.str("id"))
	}
	// Now it drops every answer: the outcome stays unknown, the terminal
	// hears declined, and still nothing goes to bank-b.
	a.faults(t, "", `{"drop_after_apply":{}}`)
	lost := s.pay(700, map[string]any{"offline_behavior": "require_online"})
	if lost.str("status") != "declined" {
		t.Fatalf("payment whose answers are all lost: %s", lost)
	}
	if n := b.ledger(t).calls(b.urls[0], "POST /v1/authorizations"); n != 0 {
		t.Fatalf("bank-b received %d authorizations; a payment with an unknown outcome went to a second bank", n)
	}
	a.clear(t)
	waitFor(t, "the approval of the lost payment to be reversed", 15*time.Second, func() bool {
		p := s.get("/v1/payments/" + lost.str("id"))
		return p.status == 200 && p.str("pending_op") == ""
	})
	at := where(t, a, b)
	for _, id := range ids {
		if at[id] != "bank-a" {
			t.Fatalf("%s charged at %q", id, at[id])
		}
	}
	if _, ok := at[lost.str("id")]; ok {
		t.Fatal("the declined payment stayed charged")
	}
}

// A 401 is a configuration fault: the bank is disabled with an alert, not
// retried in a loop, and comes back when a manager enables it.
func TestPrimaryUnauthorized(t *testing.T) {
	a, b := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	s := newStore(t, []gw{{bank: a}, {bank: b}}, nil)
	a.faults(t, "", `{"unauthorized":{}}`)
	for i := 0; i < 5; i++ {
		if p := s.pay(300, nil); p.str("gateway") != "bank-b" || p.str("status") != "captured" {
			t.Fatalf("payment %d: %s", i, p)
		}
	}
	g := s.gateways()["bank-a"]
	if g["state"] != "disabled" {
		t.Fatalf("bank-a after a 401: %v", g)
	}
	time.Sleep(500 * time.Millisecond) // let the prober run a few times: it must not re-enable the bank
	if n := a.ledger(t).calls(a.urls[0], "POST /v1/authorizations"); n != 1 {
		t.Fatalf("bank-a was sent %d authorizations after its 401, want 1", n)
	}
	a.clear(t)
	if r := s.call("POST", "/v1/gateways/bank-a/enable", s.manager, "", nil); r.status != 200 {
		t.Fatalf("enable: %s", r)
	}
	if p := s.pay(300, nil); p.str("gateway") != "bank-a" {
		t.Fatalf("after enable: %s", p)
	}
}

// An idle store learns of a 401 from its health probes: the bank is
// disabled with an alert before any customer pays, and is not probed in a
// loop afterwards.
func TestIdleStoreNoticesA401(t *testing.T) {
	a, b := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	s := newStore(t, []gw{{bank: a}, {bank: b}}, nil)
	a.faults(t, "", `{"unauthorized":{}}`)
	waitFor(t, "bank-a disabled by its probe's 401", 10*time.Second, func() bool {
		return s.gateways()["bank-a"]["state"] == "disabled"
	})
	probes := a.ledger(t).calls(a.urls[0], "GET /v1/health")
	time.Sleep(time.Second) // five probe intervals: a disabled bank is not probed
	if n := a.ledger(t).calls(a.urls[0], "GET /v1/health"); n != probes {
		t.Fatalf("bank-a probed %d more times after it was disabled", n-probes)
	}
	if p := s.pay(300, nil); p.str("gateway") != "bank-b" {
		t.Fatalf("payment after bank-a's 401: %s", p)
	}
	if n := a.ledger(t).calls(a.urls[0], "POST /v1/authorizations"); n != 0 {
		t.Fatalf("bank-a was sent %d authorizations, want none", n)
	}
}

// All URLs of a bank but one are down: the bank still takes the traffic
// through its surviving URL; the next bank is not needed.
func TestFailoverURLWithinABank(t *testing.T) {
	a, b := startBank(t, "bank-a", 2), startBank(t, "bank-b", 1)
	s := newStore(t, []gw{{bank: a}, {bank: b}}, nil)
	a.faults(t, a.urls[0], `{"refuse":true}`)
	for i := 0; i < 5; i++ {
		if p := s.pay(400, nil); p.str("gateway") != "bank-a" || p.str("status") != "captured" {
			t.Fatalf("payment %d: %s", i, p)
		}
	}
	l := a.ledger(t)
	if l.calls(a.urls[1], "POST /v1/authorizations") != 5 {
		t.Fatalf("bank-a's second URL took %d authorizations, want 5", l.calls(a.urls[1], "POST /v1/authorizations"))
	}
	if n := b.ledger(t).calls(b.urls[0], "POST /v1/authorizations"); n != 0 {
		t.Fatalf("bank-b was called %d times", n)
	}
	where(t, a, b)
}

// A business rule caps bank-a at 5 calls per second: the overflow goes to
// bank-b at once instead of queueing.
func TestRateLimitOverflowsToNextBank(t *testing.T) {
	a, b := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	s := newStore(t, []gw{{bank: a, extra: map[string]any{"rate_per_second": 5}}, {bank: b}}, nil)
	orders := make([]string, 40)
	for i := range orders {
		orders[i] = s.order(100)
	}
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan string, len(orders))
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < len(orders); i += 8 {
				p := s.post("/v1/orders/"+orders[i]+"/payments", card(100, nil))
				if p.status != 201 || p.str("status") != "captured" {
					errs <- p.String()
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	for e := range errs {
		t.Fatalf("payment failed: %s", e)
	}
	at := where(t, a, b)
	n := map[string]int{}
	for _, bank := range at {
		n[bank]++
	}
	if max := int(5*elapsed.Seconds()) + 2; n["bank-a"] > max {
		t.Fatalf("bank-a took %d payments in %s, over its 5/s cap", n["bank-a"], elapsed)
	}
	if n["bank-b"] == 0 || n["bank-a"]+n["bank-b"] != len(orders) {
		t.Fatalf("split a=%d b=%d of %d", n["bank-a"], n["bank-b"], len(orders))
	}
}

// A bank answering 429 is left alone for its Retry-After; the payment goes
// to the next bank.
func TestRetryAfterIsRespected(t *testing.T) {
	a, b := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	s := newStore(t, []gw{{bank: a}, {bank: b}}, nil)
	a.faults(t, "", `{"rate_limit":{"per_second":0,"retry_after":"30s"}}`)
	for i := 0; i < 3; i++ {
		if p := s.pay(200, nil); p.str("gateway") != "bank-b" {
			t.Fatalf("payment %d: %s", i, p)
		}
	}
	if n := a.ledger(t).calls(a.urls[0], "POST /v1/authorizations"); n != 1 {
		t.Fatalf("bank-a got %d authorizations during its Retry-After, want 1", n)
	}
}

// Every bank down: a payment that needs a bank is declined with a clear
// code, quickly, and nothing is charged anywhere.
func TestEveryBankDown(t *testing.T) {
	a, b := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	s := newStore(t, []gw{{bank: a}, {bank: b}}, nil)
	a.faults(t, "", `{"refuse":true}`)
	b.faults(t, "", `{"refuse":true}`)
	t0 := time.Now()
	p := s.pay(900, map[string]any{"offline_behavior": "require_online"})
	if p.str("status") != "declined" || p.str("decline_code") != "bank_unavailable" {
		t.Fatalf("payment with every bank down: %s", p)
	}
	if d := time.Since(t0); d > 30*time.Second {
		t.Fatalf("decision took %s, over the contract's 30s", d)
	}
	if at := where(t, a, b); len(at) != 0 {
		t.Fatalf("charges with every bank down: %v", at)
	}
}

// A bank that accepts connections and never answers, its health checks
// included: once its breaker is open, the failing probes keep it open, and
// no customer's payment is sent there as a trial when the breaker's delay
// runs out (each such trial would end unknown, pinned to the hung bank,
// while the other bank would have approved it).
func TestHungBankGetsNoTrialPayments(t *testing.T) {
	a, b := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	s := newStore(t, []gw{{bank: a}, {bank: b}}, nil)
	a.faults(t, "", `{"blackhole":{}}`)
	caught := s.pay(500, map[string]any{"offline_behavior": "require_online"})
	if caught.str("decline_code") != "bank_unavailable" {
		t.Fatalf("payment caught in the hung bank: %s", caught)
	}
	waitFor(t, "bank-a's breaker to open", 10*time.Second, func() bool {
		return s.gateways()["bank-a"]["state"] == "open"
	})
	sent := a.ledger(t).calls(a.urls[0], "POST /v1/authorizations")
	probes := a.ledger(t).calls(a.urls[0], "GET /v1/health")
	// Pay on through three breaker delays (1 s each): a probe of the hung
	// bank takes its 300 ms attempt timeout, and the next starts 200 ms
	// later, so six probes take 3 s.
	for n := 0; a.ledger(t).calls(a.urls[0], "GET /v1/health") < probes+6; n++ {
		if n >= 5000 {
			t.Fatal("bank-a was not probed 6 times")
		}
		if p := s.pay(500, map[string]any{"offline_behavior": "require_online"}); p.str("status") != "captured" || p.str("gateway") != "bank-b" {
			t.Fatalf("payment while bank-a hangs: %s", p)
		}
	}
	if n := a.ledger(t).calls(a.urls[0], "POST /v1/authorizations"); n != sent {
		t.Fatalf("bank-a was sent %d payments as breaker trials while its probes failed", n-sent)
	}
}
