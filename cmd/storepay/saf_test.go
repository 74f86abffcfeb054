package main

import (
	"strings"
	"testing"
	"time"

	"storepay/gateway/banksim"
)

func refuseAll(t *testing.T, banks ...*bank) {
	t.Helper()
	for _, b := range banks {
		if err := b.sim.SetFaults("", banksim.Faults{Refuse: true}); err != nil {
			t.Fatal(err)
		}
	}
}

func clearAll(t *testing.T, banks ...*bank) {
	t.Helper()
	for _, b := range banks {
		if err := b.sim.ClearFaults(); err != nil {
			t.Fatal(err)
		}
	}
}

func (s *store) mgr(method, path string, body any) resp {
	return s.call(method, path, s.manager, "", body)
}

func (s *store) safRecord(paymentID string) map[string]any {
	s.t.Helper()
	for _, r := range s.mgr("GET", "/v1/saf?limit=1000", nil).body["data"].([]any) {
		if m := r.(map[string]any); m["payment_id"] == paymentID {
			return m
		}
	}
	return nil
}

func (s *store) waitPayment(id, status string) resp {
	s.t.Helper()
	var p resp
	waitFor(s.t, "payment "+id+" to be "+status, 10*time.Second, func() bool {
		p = s.get("/v1/payments/" + id)
		return p.str("status") == status
	})
	return p
}

// Every bank down: a card payment inside the offline rules is stored,
// and forwarded by itself, once, when a bank returns.
func TestStoredOfflineThenForwardedOnce(t *testing.T) {
	a, b := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	s := startStore(t, []*bank{a, b})
	refuseAll(t, a, b)
	id := s.order(2500)
	p := must(t, s.post("/v1/orders/"+id+"/payments", cardBody(2500, visa, map[string]any{"tip_amount": 500})), 201)
	if p.str("status") != "stored" || p.str("mode") != "offline" || p.str("decline_code") != "" {
		t.Fatalf("offline payment: %s", p)
	}
	if o := s.get("/v1/orders/" + id); o.str("status") != "paid" {
		t.Fatalf("a stored payment pays the order: %s", o)
	}
	rec := s.safRecord(p.str("id"))
	if rec == nil || (rec["status"] != "queued" && rec["status"] != "forwarding") || rec["amount"].(float64) != 3000 || rec["currency"] != "USD" {
		t.Fatalf("queue record: %v", rec)
	}
	// Only bank-a comes back: with both, a forward that found bank-a
	// still refusing could rightly land at bank-b a moment later.
	clearAll(t, a)
	f := s.waitPayment(p.str("id"), "captured")
	if f.str("gateway") != "bank-a" || f.str("mode") != "offline" || f.str("auth_code") == "" || f.str("last_error") != "" {
		t.Fatalf("forwarded payment: %s, want it at bank-a, with no error left from its online attempt", f)
	}
	var advice *banksim.Authorization
	for _, au := range a.sim.Ledger().Authorizations {
		if au.Reference == p.str("id") {
			advice = &au
		}
	}
	if advice == nil || !advice.Stored || advice.Amount != 3000 {
		t.Fatalf("the bank got %+v, want a stored advice of 3000", advice)
	}
	if n := a.sim.Ledger().ChargesFor(p.str("id")) + b.sim.Ledger().ChargesFor(p.str("id")); n != 1 {
		t.Fatalf("charged %d times", n)
	}
	if r := s.safRecord(p.str("id")); r["status"] != "forwarded" || r["attempts"] != 1.0 {
		t.Fatalf("record after forwarding: %v, want forwarded after 1 attempt", r)
	}
	var sealed int
	s.app.DB.Read().QueryRow(`SELECT count(*) FROM saf_records WHERE card_sealed IS NOT NULL`).Scan(&sealed)
	if sealed != 0 {
		t.Fatal("card data kept after the record was forwarded")
	}
}

// The contract's offline rules are the floor and total limits: with no
// per-card limit configured, one card may pay many orders offline (the
// store's test card on every lane, a regular buying lunch every day).
func TestNoPerCardLimitUnlessConfigured(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{a})
	refuseAll(t, a)
	for i := range 6 {
		p := must(t, s.post("/v1/orders/"+s.order(1000)+"/payments", cardBody(1000, visa, nil)), 201)
		if p.str("status") != "stored" {
			t.Fatalf("payment %d with the same card: %s, want stored", i+1, p)
		}
	}
}

func TestOfflineRules(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{a}, func(c *Config) {
		c.Offline.FloorLimit, c.Offline.TotalLimit = 1000, 5000
		c.Offline.VelocityCount = 2
		c.Offline.HotCards = []string{"555555******4444"}
	})
	refuseAll(t, a)
	pay := func(amount int64, pan string, extra map[string]any) resp {
		return must(t, s.post("/v1/orders/"+s.order(amount+100)+"/payments", cardBody(amount, pan, extra)), 201)
	}
	for _, tc := range []struct {
		name    string
		amount  int64
		pan     string
		extra   map[string]any
		status  string
		decline string
	}{
		{"OverFloorLimit", 1001, visa, nil, "declined", "offline_limit_exceeded"},
		{"TipCountsTowardsFloor", 900, visa, map[string]any{"tip_amount": 101}, "declined", "offline_limit_exceeded"},
		{"RequireOnline", 100, visa, map[string]any{"offline_behavior": "require_online"}, "declined", "bank_unavailable"},
		{"HotCard", 100, "5555555555554444", nil, "declined", "offline_card_blocked"},
		{"FirstOfACard", 1000, visa, nil, "stored", ""},
		{"SecondCard", 1000, "4000056655665556", nil, "stored", ""},
		{"SameCardAgain", 10, "4000056655665556", nil, "stored", ""},
		{"VelocityCount", 10, "4000056655665556", nil, "declined", "offline_velocity_exceeded"},
		{"ThirdCard", 1000, "4012888888881881", nil, "stored", ""},
		{"FourthCard", 1000, "5105105105105100", nil, "stored", ""},
		{"OverTotalLimit", 1000, "6011111111111117", nil, "declined", "offline_limit_exceeded"},
		{"UpToTotalLimit", 990, "6011111111111117", nil, "stored", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := pay(tc.amount, tc.pan, tc.extra)
			if p.str("status") != tc.status || p.str("decline_code") != tc.decline {
				t.Fatalf("got %s %q, want %s %q: %s", p.str("status"), p.str("decline_code"), tc.status, tc.decline, p)
			}
			// Stored or refused by the offline rules, it was decided offline;
			// only require_online asked for (and missed) a bank.
			if wantMode := map[bool]string{true: "online", false: "offline"}[tc.decline == "bank_unavailable"]; p.str("mode") != wantMode {
				t.Errorf("mode %q, want %q: %s", p.str("mode"), wantMode, p)
			}
			if p.str("gateway") != "" {
				t.Errorf("gateway %q: no bank decided it (each refused the connection)", p.str("gateway"))
			}
		})
	}
	st := s.mgr("GET", "/v1/saf/stats", nil)
	if st.num("outstanding_amount") != 5000 || st.num("total_limit") != 5000 {
		t.Fatalf("stats: %s", st)
	}
}

// force_offline stores without asking any bank.
func TestForceOffline(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{a}, func(c *Config) { c.Forwarding.Interval = Duration{-1} })
	p := must(t, s.post("/v1/orders/"+s.order(700)+"/payments", cardBody(700, visa, map[string]any{"offline_behavior": "force_offline"})), 201)
	if p.str("status") != "stored" || p.str("gateway") != "" {
		t.Fatalf("force_offline: %s", p)
	}
	if n := a.sim.Ledger().Calls(a.urls[0], banksim.EndpointAuthorize); n != 0 {
		t.Fatalf("force_offline called the bank %d times", n)
	}
}

// The bank declines an advice: the payment becomes declined_after_forward
// and the manager sees it. A card declined as lost or stolen is refused
// offline from then on; one declined with do_not_honor is not (it may pay
// another day, and the offline limits bound it).
func TestDeclinedAfterForward(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{a})
	const declining = "4000000000000002"
	must(t, s.mgr("PUT", "/v1/estop", map[string]any{"state": "pause"}), 200)
	id := s.order(800)
	p := must(t, s.post("/v1/orders/"+id+"/payments", cardBody(800, declining, map[string]any{"offline_behavior": "force_offline"})), 201)
	must(t, s.post("/v1/orders/"+id+"/deliver", nil), 200) // the goods leave the store
	must(t, s.mgr("PUT", "/v1/estop", map[string]any{"state": "go"}), 200)
	f := s.waitPayment(p.str("id"), "declined_after_forward")
	if f.str("decline_code") != "do_not_honor" {
		t.Fatalf("declined after forward: %s", f)
	}
	if r := s.safRecord(p.str("id")); r["status"] != "declined" || r["attempts"] != 1.0 {
		t.Fatalf("record: %v, want declined after 1 attempt", r)
	}
	if st := s.mgr("GET", "/v1/saf/stats", nil); st.num("declined_after_forward") != 1 {
		t.Fatalf("stats: %s", st)
	}
	if o := s.get("/v1/orders/" + id); o.str("status") != "delivered" || o.num("paid_amount") != 0 {
		t.Fatalf("order after the decline: %s", o)
	}
	again := must(t, s.post("/v1/orders/"+s.order(100)+"/payments", cardBody(100, declining, map[string]any{"offline_behavior": "force_offline"})), 201)
	if again.str("status") != "stored" {
		t.Fatalf("a do_not_honor card offline again: %s, want stored", again)
	}

	const stolen = "4000000000009979"
	lost := must(t, s.post("/v1/orders/"+s.order(300)+"/payments", cardBody(300, stolen, map[string]any{"offline_behavior": "force_offline"})), 201)
	if f := s.waitPayment(lost.str("id"), "declined_after_forward"); f.str("decline_code") != "lost_or_stolen" {
		t.Fatalf("declined after forward: %s", f)
	}
	blocked := must(t, s.post("/v1/orders/"+s.order(100)+"/payments", cardBody(100, stolen, map[string]any{"offline_behavior": "force_offline"})), 201)
	if blocked.str("decline_code") != "offline_card_blocked" {
		t.Fatalf("a lost or stolen card offline again: %s", blocked)
	}
}

// The bank swallows an online authorization: its outcome is unknown, so
// the payment is stored pinned to that bank, never sent to the healthy
// second bank, and resolved there by repeating the very same request.
func TestUnknownOutcomeStoredPinnedToItsBank(t *testing.T) {
	a, b := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	s := startStore(t, []*bank{a, b}, func(c *Config) {
		c.Gateways[0].AttemptTimeout = Duration{200 * time.Millisecond}
		c.Gateways[0].MaxAttempts = 2
	})
	if err := a.sim.SetFaults("", banksim.Faults{Latency: &banksim.Latency{Fixed: time.Hour, AfterWork: true}}); err != nil {
		t.Fatal(err)
	}
	p := must(t, s.post("/v1/orders/"+s.order(900)+"/payments", cardBody(900, visa, nil)), 201)
	if p.str("status") != "stored" || p.str("gateway") != "bank-a" {
		t.Fatalf("payment with an unknown outcome: %s", p)
	}
	if r := s.safRecord(p.str("id")); r["gateway"] != "bank-a" {
		t.Fatalf("record not pinned: %v", r)
	}
	sent := a.sim.Ledger().Calls("", banksim.EndpointAuthorize)
	clearAll(t, a)
	f := s.waitPayment(p.str("id"), "captured")
	if f.str("gateway") != "bank-a" || f.str("auth_code") == "" {
		t.Fatalf("resolved: %s", f)
	}
	if n := a.sim.Ledger().ChargesFor(p.str("id")); n != 1 {
		t.Fatalf("bank-a charged %d times", n)
	}
	// The bank's approval was found by looking the payment up: the
	// authorization was not sent again.
	if n := a.sim.Ledger().Calls("", banksim.EndpointAuthorize); n != sent {
		t.Fatalf("the authorization was sent %d more times; the lookup should have found the approval", n-sent)
	}
	if n := b.sim.Ledger().Calls(b.urls[0], banksim.EndpointAuthorize); n != 0 {
		t.Fatalf("bank-b was asked %d times about a payment pinned to bank-a", n)
	}
}

func TestManagerQueueActionsAreAudited(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{a})
	must(t, s.mgr("PUT", "/v1/estop", map[string]any{"state": "pause", "reason": "count the till"}), 200)
	var ids []string
	for i := 0; i < 3; i++ {
		p := must(t, s.post("/v1/orders/"+s.order(400)+"/payments", cardBody(400, visa, map[string]any{"offline_behavior": "force_offline"})), 201)
		ids = append(ids, s.safRecord(p.str("id"))["id"].(string))
	}
	h := must(t, s.mgr("POST", "/v1/saf/"+ids[0]+"/hold", map[string]any{"reason": "customer disputes"}), 200)
	if h.str("status") != "held" {
		t.Fatalf("hold: %s", h)
	}
	wantProblem(t, s.mgr("POST", "/v1/saf/"+ids[1]+"/release", nil), 409, "saf_not_held")
	wantProblem(t, s.mgr("POST", "/v1/saf/saf_nope/replay", nil), 404, "saf_record_not_found")
	wantProblem(t, s.call("POST", "/v1/saf/"+ids[0]+"/release", s.terminal, "", nil), 403, "forbidden")
	if held := s.mgr("GET", "/v1/saf?status=held", nil).body["data"].([]any); len(held) != 1 {
		t.Fatalf("held: %v", held)
	}
	bulk := must(t, s.mgr("POST", "/v1/saf/replay", map[string]any{"reason": "bank is back"}), 200)
	if bulk.num("count") != 3 || bulk.num("amount") != 1200 {
		t.Fatalf("replay all: %s", bulk)
	}
	// Still paused: nothing was sent.
	if n := a.sim.Ledger().Calls(a.urls[0], banksim.EndpointAuthorize); n != 0 {
		t.Fatalf("paused forwarder sent %d", n)
	}
	must(t, s.mgr("PUT", "/v1/estop", map[string]any{"state": "go", "reason": "done"}), 200)
	waitFor(t, "the queue to drain", 10*time.Second, func() bool {
		return len(s.mgr("GET", "/v1/saf?status=forwarded", nil).body["data"].([]any)) == 3
	})
	audit := s.mgr("GET", "/v1/audit", nil).body["data"].([]any)
	var actions []string
	for _, e := range audit {
		m := e.(map[string]any)
		if m["action"] == "device.enroll" && m["actor"] == "storepay" {
			continue // the test's own setup enrolled the devices
		}
		if m["actor"] != "boss" {
			t.Fatalf("audit entry without its manager: %v", m)
		}
		actions = append(actions, m["action"].(string)+":"+m["reason"].(string))
	}
	got := strings.Join(actions, ",")
	for _, want := range []string{"estop.pause:count the till", "saf.hold:customer disputes", "saf.replay_all:bank is back", "estop.go:done"} {
		if !strings.Contains(got, want) {
			t.Errorf("audit log lacks %q: %s", want, got)
		}
	}
}

func TestEStopPersistsAndUnreadableMeansStop(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{a})
	if e := s.mgr("GET", "/v1/estop", nil); e.str("state") != "go" {
		t.Fatalf("initial: %s", e)
	}
	if e := must(t, s.mgr("PUT", "/v1/estop", map[string]any{"state": "halt"}), 200); e.str("state") != "stop" {
		t.Fatalf("an unreadable state must count as stop: %s", e)
	}
	must(t, s.mgr("PUT", "/v1/estop", map[string]any{"state": "stop", "reason": "fraud alert"}), 200)
	s.restart()
	if e := s.mgr("GET", "/v1/estop", nil); e.str("state") != "stop" || e.str("reason") != "fraud alert" || e.str("actor") != "boss" {
		t.Fatalf("after restart: %s", e)
	}
	p := must(t, s.post("/v1/orders/"+s.order(300)+"/payments", cardBody(300, visa, map[string]any{"offline_behavior": "force_offline"})), 201)
	s.restart()
	if err := s.app.DB.Update(t.Context(), execSQL(`UPDATE estop SET state = 'bogus'`)); err != nil {
		t.Fatal(err)
	}
	if e := s.mgr("GET", "/v1/estop", nil); e.str("state") != "stop" {
		t.Fatalf("unreadable estop reads as %s", e)
	}
	time.Sleep(100 * time.Millisecond) // several forwarder scans (20ms) must pass and send nothing
	if n := a.sim.Ledger().Calls(a.urls[0], banksim.EndpointAuthorize); n != 0 {
		t.Fatalf("forwarded %d under an unreadable emergency stop", n)
	}
	must(t, s.mgr("PUT", "/v1/estop", map[string]any{"state": "go"}), 200)
	s.waitPayment(p.str("id"), "captured")
}

func TestVoidStoredPaymentLeavesTheQueue(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{a}, func(c *Config) { c.Forwarding.Interval = Duration{-1} })
	id := s.order(600)
	p := must(t, s.post("/v1/orders/"+id+"/payments", cardBody(600, visa, map[string]any{"offline_behavior": "force_offline"})), 201)
	v := must(t, s.post("/v1/payments/"+p.str("id")+"/void", nil), 200)
	if v.str("status") != "voided" {
		t.Fatalf("void: %s", v)
	}
	if r := s.safRecord(p.str("id")); r != nil {
		t.Fatalf("record still queued: %v", r)
	}
	if st := s.mgr("GET", "/v1/saf/stats", nil); st.num("outstanding_amount") != 0 {
		t.Fatalf("stats after void: %s", st)
	}
}

func TestExpiredRecordsAreFlaggedAndReplayable(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{a}, func(c *Config) { c.Offline.MaxAge = Duration{50 * time.Millisecond} })
	must(t, s.mgr("PUT", "/v1/estop", map[string]any{"state": "pause"}), 200)
	p := must(t, s.post("/v1/orders/"+s.order(500)+"/payments", cardBody(500, visa, map[string]any{"offline_behavior": "force_offline"})), 201)
	var rec map[string]any
	waitFor(t, "the record to expire", 5*time.Second, func() bool {
		rec = s.safRecord(p.str("id"))
		return rec["status"] == "expired"
	})
	must(t, s.mgr("PUT", "/v1/estop", map[string]any{"state": "go"}), 200)
	time.Sleep(100 * time.Millisecond) // several scans: an expired record is not forwarded by itself
	if got := s.get("/v1/payments/" + p.str("id")); got.str("status") != "stored" {
		t.Fatalf("expired record forwarded automatically: %s", got)
	}
	must(t, s.mgr("POST", "/v1/saf/"+rec["id"].(string)+"/replay", map[string]any{"reason": "customer confirmed"}), 200)
	s.waitPayment(p.str("id"), "captured")
}

// The contract: anything unreadable counts as stop. A garbled emergency
// stop request engages stop; a body the HTTP conventions refuse is still
// answered 400, with stop engaged.
func TestUnreadableEStopRequestCountsAsStop(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	state := func() string { return must(t, s.mgr("GET", "/v1/estop", nil), 200).str("state") }
	for _, body := range []any{
		map[string]any{"state": "bogus"},
		map[string]any{"state": "PAUSE"},
		map[string]any{"reason": "no state at all"},
	} {
		must(t, s.mgr("PUT", "/v1/estop", map[string]any{"state": "go"}), 200)
		if got := must(t, s.mgr("PUT", "/v1/estop", body), 200).str("state"); got != "stop" {
			t.Errorf("PUT %v answered state %q, want stop", body, got)
		}
		if got := state(); got != "stop" {
			t.Errorf("after PUT %v the emergency stop is %q, want stop", body, got)
		}
	}
	for _, body := range []string{`{"state": `, `{"state": 1}`, `{"state": "go", "colour": "red"}`} {
		must(t, s.mgr("PUT", "/v1/estop", map[string]any{"state": "go"}), 200)
		must(t, s.mgr("PUT", "/v1/estop", body), 400)
		if got := state(); got != "stop" {
			t.Errorf("after PUT %s the emergency stop is %q, want stop", body, got)
		}
	}
}

// A payment every bank answered "not processed" is forwarded as a stored
// advice: another body than its online attempt, so under another key. A
// bank that kept the first key with its 503 would otherwise refuse the
// advice as a reused key, forever.
func TestAdviceDoesNotReuseTheOnlineAttemptsKey(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{a})
	if err := a.sim.SetFaults("", banksim.Faults{NotProcessed: &banksim.Fault{}}); err != nil {
		t.Fatal(err)
	}
	p := must(t, s.post("/v1/orders/"+s.order(700)+"/payments", cardBody(700, visa, nil)), 201)
	if p.str("status") != "stored" {
		t.Fatalf("payment no bank processed: %s", p)
	}
	if n := a.sim.Ledger().Calls("", banksim.EndpointAuthorize); n == 0 {
		t.Fatal("the online attempt never reached the bank; this test needs it to")
	}
	clearAll(t, a)
	s.waitPayment(p.str("id"), "captured")
	for _, au := range a.sim.Ledger().Authorizations {
		if au.Reference == p.str("id") && (!au.Stored || au.IdempotencyKey == p.str("id")) {
			t.Fatalf("advice %+v: want stored, under a key other than the online attempt's (%s)", au, p.str("id"))
		}
	}
}
