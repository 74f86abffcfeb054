package main

import (
	"database/sql"
	"strings"
	"sync"
	"testing"
	"time"

	"storepay/gateway/banksim"
	"storepay/migrations"
)

// The bank charges, then the connection dies: storepay repeats the
// request with the same key, learns the approval, and the card is charged
// once.
func TestLostResponseIsResolvedBySameKeyRetry(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b})
	b.sim.SetFaults("", banksim.Faults{DropAfterApply: &banksim.Fault{Next: 1}})
	id := s.order(900)
	r := must(t, s.post("/v1/orders/"+id+"/payments", cardBody(900, visa, nil)), 201)
	if r.str("status") != "captured" {
		t.Fatalf("payment: %s", r)
	}
	l := b.sim.Ledger()
	if n := l.ChargesFor(r.str("id")); n != 1 {
		t.Fatalf("charged %d times", n)
	}
	if calls := l.Calls(b.urls[0], "POST /v1/authorizations"); calls < 2 {
		t.Fatalf("expected a same-key retry, bank saw %d authorization requests", calls)
	}
}

// A bank slower than the attempt timeout (here 4× it) is still heard
// within the payment's budget: the repeats under the same key find it
// busy with the first request (409 idempotency_key_in_use), which is no
// failed attempt, and then get its answer. The sale is approved online,
// charged once, instead of being stored or declined.
func TestSlowBankAnswersWithinTheBudget(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b}) // attempts of 500 ms, 3 of them, a 5 s budget
	if err := b.sim.SetFaults("", banksim.Faults{Latency: &banksim.Latency{Fixed: 2 * time.Second, Fault: banksim.Fault{Next: 1}}}); err != nil {
		t.Fatal(err)
	}
	r := must(t, s.post("/v1/orders/"+s.order(900)+"/payments", cardBody(900, visa, nil)), 201)
	if r.str("status") != "captured" || r.str("mode") != "online" {
		t.Fatalf("payment at a slow bank: %s, want captured online", r)
	}
	l := b.sim.Ledger()
	if n := l.ChargesFor(r.str("id")); n != 1 {
		t.Fatalf("charged %d times", n)
	}
	if calls := l.Calls(b.urls[0], banksim.EndpointAuthorize); calls < 4 {
		t.Fatalf("the bank saw %d authorization requests: the busy answers should have been more than the 3 attempts", calls)
	}
}

// A bank whose every answer (health, replays and busy answers included)
// takes longer than the attempt timeout is slow, not down: the repeat
// after the first attempt ran out of time gets three times as long, and
// hears the approval within the payment's budget. Six terminals paying at
// once time out together and open the bank's breaker, as a bank that
// swallows requests would: it keeps new payments away, but the repeats of
// the six, whose outcome is unknown there, go on and hear their answers.
func TestBankSlowerThanTheAttemptTimeoutOnEveryAnswer(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b}) // attempts of 500 ms (1.5 s once slow), a 5 s budget
	orders := make([]string, 6)
	for i := range orders {
		orders[i] = s.order(900)
	}
	if err := b.sim.SetFaults("", banksim.Faults{Latency: &banksim.Latency{Fixed: 1200 * time.Millisecond}}); err != nil {
		t.Fatal(err)
	}
	answers := make([]resp, len(orders))
	var wg sync.WaitGroup
	for i, id := range orders {
		wg.Go(func() { answers[i] = s.post("/v1/orders/"+id+"/payments", cardBody(900, visa, nil)) })
	}
	wg.Wait()
	for _, r := range answers {
		if r.status != 201 || r.str("status") != "captured" || r.str("mode") != "online" {
			t.Fatalf("payment at a bank answering in 1.2 s: %s, want captured online", r)
		}
		if n := b.sim.Ledger().ChargesFor(r.str("id")); n != 1 {
			t.Fatalf("charged %d times", n)
		}
	}
}

// No bank reachable and the terminal requires an online decision:
// declined with bank_unavailable, nothing charged, nothing left to resolve.
func TestBankRefusingConnectionsDeclines(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b})
	b.sim.SetFaults("", banksim.Faults{Refuse: true})
	id := s.order(900)
	r := must(t, s.post("/v1/orders/"+id+"/payments", cardBody(900, visa, map[string]any{"offline_behavior": "require_online"})), 201)
	if r.str("status") != "declined" || r.str("decline_code") != "bank_unavailable" {
		t.Fatalf("payment: %s", r)
	}
	if p := s.get("/v1/payments/" + r.str("id")); p.str("pending_op") != "" {
		t.Fatalf("a payment no bank saw must not wait for resolution: %s", p)
	}
}

// The bank approves and its answer is lost: the outcome is unknown. The
// terminal hears declined; storepay keeps the payment pinned to that bank
// and, when the bank answers again, looks up what it holds under the
// payment's key and reverses the approval it finds. The card ends up not
// charged.
func TestUnknownOutcomeDeclinedThenReversed(t *testing.T) {
	clearOfMidnight(t, time.Minute) // past midnight the bank has settled the sale: it would be refunded
	b, s, r := payIntoLostAnswers(t)
	if r.str("status") != "declined" || r.str("decline_code") != "bank_unavailable" {
		t.Fatalf("payment: %s", r)
	}
	pid := r.str("id")
	if p := s.get("/v1/payments/" + pid); p.str("pending_op") != "reverse" {
		t.Fatalf("want a pending reversal: %s", p)
	}
	b.sim.ClearFaults()
	waitFor(t, "the resolver to reverse the approval", 10*time.Second, func() bool {
		p := s.get("/v1/payments/" + pid)
		return p.status == 200 && p.str("pending_op") == ""
	})
	l := b.sim.Ledger()
	if n := l.ChargesFor(pid); n != 0 {
		t.Fatalf("card still charged %d times", n)
	}
	reversed := 0
	for _, a := range l.Authorizations {
		if a.Reference == pid && a.Status == "reversed" {
			reversed++
		}
	}
	if reversed != 1 {
		t.Fatalf("want the approval found by the lookup reversed; ledger: %+v", l.Authorizations)
	}
	if p := s.get("/v1/payments/" + pid); p.str("status") != "declined" {
		t.Fatalf("final: %s", p)
	}
}

// The bank answers 500 (outcome unknown) and in fact did nothing. The
// resolver checks with a lookup, which charges nobody: it never sends the
// authorization again, so the card holder never sees an approval and its
// reversal for a payment the terminal declined.
func TestDeclinedUnknownOutcomeIsCheckedByLookupNotByCharging(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b}, func(c *Config) { c.Gateways[0].MaxAttempts = 2 })
	b.sim.SetFaults("", banksim.Faults{Error: &banksim.Fault{}})
	r := must(t, s.post("/v1/orders/"+s.order(900)+"/payments", cardBody(900, visa, map[string]any{"offline_behavior": "require_online"})), 201)
	if r.str("status") != "declined" || s.get("/v1/payments/"+r.str("id")).str("pending_op") != "reverse" {
		t.Fatalf("payment: %s, want declined with a pending check", r)
	}
	sent := b.sim.Ledger().Calls("", banksim.EndpointAuthorize)
	b.sim.ClearFaults()
	waitFor(t, "the resolver to look the payment up twice", 10*time.Second, func() bool {
		return b.sim.Ledger().Calls("", banksim.EndpointFind) >= 2
	})
	l := b.sim.Ledger()
	if n := l.Calls("", banksim.EndpointAuthorize); n != sent {
		t.Fatalf("the authorization was sent %d more times after the outage", n-sent)
	}
	for _, a := range l.Authorizations {
		if a.Reference == r.str("id") {
			t.Fatalf("the bank holds %+v for a payment the terminal declined", a)
		}
	}
}

// A payment written ahead whose process died before the outcome was
// committed is resolved on start: a same-key retry at the pinned bank
// returns the approval, and nothing is charged twice.
func TestRecoveryPassResolvesPaymentsLeftInFlight(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b})
	id := s.order(900)
	r := must(t, s.post("/v1/orders/"+id+"/payments", cardBody(900, visa, map[string]any{"capture": false})), 201)
	pid := r.str("id")
	s.close()
	// Put the payment back where a crash between the bank's approval and
	// the local commit leaves it: pending, pinned, card sealed.
	db, err := migrations.Open(t.Context(), s.cfg.Database)
	if err != nil {
		t.Fatal(err)
	}
	vault := mustVault(t)
	sealed, _ := vault.Seal(pid, testCard())
	err = db.Update(t.Context(), func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE payments SET status='pending', pending_op='authorize', pending_key=id, card_sealed=?,
			pending_since=?, auth_code='', bank_auth_id='' WHERE id=?`, sealed, migrations.FormatTime(time.Now()), pid)
		if err == nil {
			_, err = tx.Exec(`UPDATE orders SET status='open', paid_amount=0 WHERE id=?`, id)
		}
		return err
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	s.open()
	waitFor(t, "the recovery pass", 10*time.Second, func() bool {
		return s.get("/v1/payments/"+pid).str("status") == "authorized"
	})
	if n := b.sim.Ledger().ChargesFor(pid); n != 1 {
		t.Fatalf("charged %d times", n)
	}
	if o := s.get("/v1/orders/" + id); o.str("status") != "paid" {
		t.Fatalf("order after recovery: %s", o)
	}
}

// A resolver pass that catches the bank still failing backs off, and the
// bank's breaker opens (10 s). When the bank answers again, a health probe
// half-opens the breaker and the waiting payment is resolved at once,
// not after its backoff or the breaker's delay.
func TestResolverResumesWhenTheBankRecovers(t *testing.T) {
	b, s, r := payIntoLostAnswers(t, func(c *Config) { c.Gateways[0].BreakerDelay = Duration{10 * time.Second} })
	pid := r.str("id")
	if r.str("pending_op") != "reverse" {
		t.Fatalf("want a payment waiting for its reversal: %s", r)
	}
	waitFor(t, "the breaker to open", 10*time.Second, func() bool {
		return s.get("/v1/payments/"+pid).str("last_error") != "" && strings.Contains(s.call("GET", "/v1/gateways", s.manager, "", nil).String(), `"state":"open"`)
	})
	b.sim.ClearFaults()
	// Well inside the breaker's 10 s delay and the resolver's backoff.
	var p resp
	waitFor(t, "the resolver to reverse the approval", 5*time.Second, func() bool {
		p = s.get("/v1/payments/" + pid)
		return p.status == 200 && p.str("pending_op") == ""
	})
	if n := b.sim.Ledger().ChargesFor(pid); n != 0 {
		t.Fatalf("card still charged %d times; payment %s; bank holds %+v", n, p, b.sim.Ledger().Authorizations)
	}
}

// payIntoLostAnswers pays 900 (require_online) at a bank that approves and
// then drops every answer, and returns the bank, the store and the
// terminal's answer. The bank keeps dropping until the test clears it.
func payIntoLostAnswers(t *testing.T, opts ...storeOption) (*bank, *store, resp) {
	return payIntoLostAnswersAs(t, "require_online", opts...)
}

// payIntoLostAnswersAs is payIntoLostAnswers with the given
// offline_behavior: with prefer_online the payment is stored, pinned to
// the bank that may hold it.
func payIntoLostAnswersAs(t *testing.T, behavior string, opts ...storeOption) (*bank, *store, resp) {
	t.Helper()
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b}, append([]storeOption{func(c *Config) {
		c.Gateways[0].AttemptTimeout = Duration{200 * time.Millisecond}
		c.Gateways[0].MaxAttempts = 2
		// As in production, probes notice the recovery: should a resolver
		// pass catch the bank still dropping and open its breaker, the
		// payment is due again as soon as a probe half-opens it.
		c.Gateways[0].ProbeInterval = Duration{500 * time.Millisecond}
	}}, opts...)...)
	id := s.order(900)
	// Just before the payment: two failed probes in a row would open the
	// breaker before the payment reached the bank.
	b.sim.SetFaults("", banksim.Faults{DropAfterApply: &banksim.Fault{}})
	return b, s, must(t, s.post("/v1/orders/"+id+"/payments", cardBody(900, visa, map[string]any{"offline_behavior": behavior})), 201)
}

// A payment stored after its bank's answer was lost may be approved at
// that bank. Voiding it before it is forwarded takes it out of the queue
// and reverses whatever the bank holds: the card holder is not charged for
// a voided sale.
func TestVoidedStoredPaymentWithUnknownOutcomeIsReversed(t *testing.T) {
	clearOfMidnight(t, time.Minute) // past midnight the bank has settled the sale: it would be refunded
	b, s, r := payIntoLostAnswersAs(t, "prefer_online", func(c *Config) {
		c.Forwarding.Interval = Duration{-1} // only the void may take it out of the queue
	})
	pid := r.str("id")
	if r.str("status") != "stored" || r.str("gateway") != "bank-a" {
		t.Fatalf("want a payment stored pinned to bank-a: %s", r)
	}
	if n := b.sim.Ledger().ChargesFor(pid); n != 1 {
		t.Fatalf("the bank should hold the lost approval, holds %d", n)
	}
	v := must(t, s.post("/v1/payments/"+pid+"/void", map[string]any{}), 200)
	if v.str("status") != "voided" || v.str("pending_op") != "reverse" {
		t.Fatalf("void: %s, want voided with a pending reversal", v)
	}
	if q := must(t, s.call("GET", "/v1/saf", s.manager, "", nil), 200); strings.Contains(q.String(), pid) {
		t.Fatalf("the voided payment is still queued: %s", q)
	}
	b.sim.ClearFaults()
	waitFor(t, "the resolver to reverse the approval", 10*time.Second, func() bool {
		p := s.get("/v1/payments/" + pid)
		return p.status == 200 && p.str("pending_op") == ""
	})
	if n := b.sim.Ledger().ChargesFor(pid); n != 0 {
		t.Fatalf("card still charged %d times for a voided payment", n)
	}
	if p := s.get("/v1/payments/" + pid); p.str("status") != "voided" {
		t.Fatalf("final: %s", p)
	}
}

// The approval of a payment the terminal heard as declined is settled
// (the bank closed the business day) before storepay can reverse it. A
// settled approval cannot be reversed, so storepay refunds it in full:
// the card holder is not left paying for a sale that failed.
func TestUnknownOutcomeSettledMeanwhileIsRefunded(t *testing.T) {
	b, s, r := payIntoLostAnswers(t)
	pid := r.str("id")
	if r.str("pending_op") != "reverse" {
		t.Fatalf("want a payment waiting for its reversal: %s", r)
	}
	var auth banksim.Authorization
	for _, a := range b.sim.Ledger().Authorizations {
		if a.Reference == pid {
			auth = a
		}
	}
	if auth.ID == "" || auth.CapturedAmount != 900 {
		t.Fatalf("the bank should hold the captured sale: %+v", auth)
	}
	if err := b.sim.CloseDay(auth.BusinessDate); err != nil {
		t.Fatal(err)
	}
	b.sim.ClearFaults()
	var p resp
	waitFor(t, "the resolver to undo the approval", 10*time.Second, func() bool {
		p = s.get("/v1/payments/" + pid)
		return p.status == 200 && p.str("pending_op") == ""
	})
	var refunded int64
	for _, rf := range b.sim.Ledger().Refunds {
		if rf.AuthorizationID == auth.ID {
			refunded += rf.Amount
		}
	}
	if refunded != 900 || p.str("status") != "declined" || p.str("last_error") != "" {
		t.Fatalf("refunded %d of 900; payment %s", refunded, p)
	}
}
