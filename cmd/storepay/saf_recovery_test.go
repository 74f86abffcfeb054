package main

import (
	"strings"
	"testing"
	"time"

	"storepay/gateway/banksim"
)

// storePinnedTo stores a payment pinned to pinned's bank: every other bank
// refuses connections (nothing done), and pinned approves and drops its
// answer (outcome unknown). Faults are cleared before it returns.
func storePinnedTo(t *testing.T, s *store, pinned *bank, others ...*bank) string {
	t.Helper()
	refuseAll(t, others...)
	if err := pinned.sim.SetFaults("", banksim.Faults{DropAfterApply: &banksim.Fault{}}); err != nil {
		t.Fatal(err)
	}
	p := must(t, s.post("/v1/orders/"+s.order(900)+"/payments", cardBody(900, visa, nil)), 201)
	if p.str("status") != "stored" || p.str("gateway") != pinned.name {
		t.Fatalf("want a payment stored pinned to %s: %s", pinned.name, p)
	}
	clearAll(t, append(others, pinned)...)
	return p.str("id")
}

// Restarted with a well-formed but different card key, storepay cannot
// open the cards it queued. Such a record is held for a manager with its
// sealed card kept, not declined and erased: with the right key back, a
// release forwards it.
func TestWrongCardKeyHoldsRecordsAndKeepsTheirCards(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{a}, func(c *Config) { c.Forwarding.Interval = Duration{-1} })
	p := must(t, s.post("/v1/orders/"+s.order(700)+"/payments", cardBody(700, visa, map[string]any{"offline_behavior": "force_offline"})), 201)
	pid := p.str("id")
	s.cfg.Forwarding.Interval = Duration{20 * time.Millisecond}
	s.restartWithCardKey(strings.Repeat("ab", 32))
	var rec map[string]any
	waitFor(t, "the record to be held", 10*time.Second, func() bool {
		rec = s.safRecord(pid)
		return rec["status"] == "held"
	})
	if le, _ := rec["last_error"].(string); !strings.Contains(le, "STOREPAY_CARD_KEY") {
		t.Fatalf("held record should say why: %v", rec)
	}
	if got := s.get("/v1/payments/" + pid); got.str("status") != "stored" {
		t.Fatalf("payment after an unreadable card: %s", got)
	}
	if n := a.sim.Ledger().Calls("", banksim.EndpointAuthorize); n != 0 {
		t.Fatalf("the bank was called %d times for a card storepay could not read", n)
	}
	s.restartWithCardKey(testCardKey)
	must(t, s.mgr("POST", "/v1/saf/"+rec["id"].(string)+"/release", map[string]any{"reason": "card key restored"}), 200)
	s.waitPayment(pid, "captured")
	if n := a.sim.Ledger().ChargesFor(pid); n != 1 {
		t.Fatalf("charged %d times", n)
	}
}

// A manager's hold on an expired record stands: later expiry scans leave
// it held, and a release still works.
func TestHoldOfAnExpiredRecordStaysHeld(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{a}, func(c *Config) { c.Offline.MaxAge = Duration{50 * time.Millisecond} })
	must(t, s.mgr("PUT", "/v1/estop", map[string]any{"state": "pause"}), 200)
	pay := func() (string, map[string]any) {
		p := must(t, s.post("/v1/orders/"+s.order(500)+"/payments", cardBody(500, visa, map[string]any{"offline_behavior": "force_offline"})), 201)
		var rec map[string]any
		waitFor(t, "the record to expire", 5*time.Second, func() bool {
			rec = s.safRecord(p.str("id"))
			return rec["status"] == "expired"
		})
		return p.str("id"), rec
	}
	first, rec := pay()
	must(t, s.mgr("POST", "/v1/saf/"+rec["id"].(string)+"/hold", map[string]any{"reason": "asking the customer"}), 200)
	pay() // expired by a scan that ran after the hold
	if got := s.safRecord(first); got["status"] != "held" {
		t.Fatalf("held record after later scans: %v", got)
	}
	must(t, s.mgr("POST", "/v1/saf/"+rec["id"].(string)+"/release", map[string]any{"reason": "customer confirmed"}), 200)
}

// Each bank's lane is filled from its own records: a record pinned to an
// idle bank-b goes out at once, while bank-a, slow, works through a
// backlog queued before it.
func TestBusyBankDoesNotHoldBackAnother(t *testing.T) {
	a, b := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	s := startStore(t, []*bank{a, b}, func(c *Config) { c.Forwarding.Interval = Duration{-1} })
	const backlog = 8
	for range backlog {
		must(t, s.post("/v1/orders/"+s.order(600)+"/payments", cardBody(600, visa, map[string]any{"offline_behavior": "force_offline"})), 201)
	}
	pinned := storePinnedTo(t, s, b, a)
	s.close()
	if err := a.sim.SetFaults("", banksim.Faults{Latency: &banksim.Latency{Fixed: time.Second}}); err != nil {
		t.Fatal(err)
	}
	s.cfg.Forwarding.Interval = Duration{20 * time.Millisecond}
	s.cfg.Forwarding.Concurrency = 1
	s.open()
	s.waitPayment(pinned, "captured")
	done := 0
	for _, au := range a.sim.Ledger().Authorizations {
		if au.Stored {
			done++
		}
	}
	// bank-b's record goes out in the first dispatch, while bank-a spends
	// a second on each of its records, one at a time. Before the lanes
	// were filled separately it waited behind bank-a's backlog.
	if done > 0 {
		t.Fatalf("bank-b's record waited behind bank-a's backlog: %d of %d forwarded first", done, backlog)
	}
	if n := b.sim.Ledger().ChargesFor(pinned); n != 1 {
		t.Fatalf("bank-b charged %d times", n)
	}
}

// A record pinned to a bank that is no longer configured can go nowhere
// else: on start it is held for a manager, with the reason.
func TestRecordPinnedToARemovedBankIsHeld(t *testing.T) {
	a, b := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	s := startStore(t, []*bank{a, b}, func(c *Config) { c.Forwarding.Interval = Duration{-1} })
	pinned := storePinnedTo(t, s, b, a)
	s.close()
	s.cfg.Gateways = s.cfg.Gateways[:1]
	s.cfg.Forwarding.Interval = Duration{20 * time.Millisecond}
	s.open()
	rec := s.safRecord(pinned)
	if le, _ := rec["last_error"].(string); rec["status"] != "held" || !strings.Contains(le, "not configured") {
		t.Fatalf("record pinned to a removed bank: %v", rec)
	}
	if n := a.sim.Ledger().Calls("", banksim.EndpointAuthorize); n != 0 {
		t.Fatalf("bank-a was asked %d times about a payment bank-b may hold", n)
	}
	// Nothing may queue it again, and a void cannot reverse it at a bank
	// that is not configured: it stays held for the manager.
	id := rec["id"].(string)
	wantProblem(t, s.mgr("POST", "/v1/saf/"+id+"/release", map[string]any{"reason": "try"}), 409, "saf_bank_not_configured")
	wantProblem(t, s.mgr("POST", "/v1/saf/"+id+"/replay", map[string]any{"reason": "try"}), 409, "saf_bank_not_configured")
	if n := must(t, s.mgr("POST", "/v1/saf/replay", map[string]any{"reason": "all"}), 200).num("count"); n != 0 {
		t.Fatalf("replay all queued %d records; the one pinned to a removed bank must stay held", n)
	}
	wantProblem(t, s.post("/v1/payments/"+pinned+"/void", nil), 409, "payment_not_voidable")
	if got := s.safRecord(pinned); got["status"] != "held" {
		t.Fatalf("record after the refused actions: %v", got)
	}
}

// Before repeating a request whose outcome is unknown, the forwarder asks
// the bank what it holds. When that lookup fails it sends nothing (a
// repeat under the same key is safe only while the bank keeps the key),
// and looks again later.
func TestFailedLookupSendsNothing(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{a}, func(c *Config) { c.Forwarding.Interval = Duration{-1} })
	pid := storePinnedTo(t, s, a)
	s.close()
	if err := a.sim.SetFaults("", banksim.Faults{Error: &banksim.Fault{}}); err != nil {
		t.Fatal(err)
	}
	sent := a.sim.Ledger().Calls("", banksim.EndpointAuthorize)
	s.cfg.Forwarding.Interval = Duration{20 * time.Millisecond}
	s.open()
	waitFor(t, "a failed lookup on the record", 10*time.Second, func() bool {
		le, _ := s.safRecord(pid)["last_error"].(string)
		return strings.Contains(le, "look up")
	})
	if n := a.sim.Ledger().Calls("", banksim.EndpointAuthorize); n != sent {
		t.Fatalf("the authorization was sent %d more times although the lookup failed", n-sent)
	}
	clearAll(t, a)
	must(t, s.mgr("POST", "/v1/saf/replay", map[string]any{"reason": "bank is back"}), 200)
	s.waitPayment(pid, "captured")
	if n := a.sim.Ledger().ChargesFor(pid); n != 1 {
		t.Fatalf("charged %d times", n)
	}
}

// A bank a manager took out of service stays out across a restart, until
// a manager enables it.
func TestManagerDisableSurvivesARestart(t *testing.T) {
	a, b := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	s := startStore(t, []*bank{a, b})
	state := func(name string) string {
		for _, g := range must(t, s.mgr("GET", "/v1/gateways", nil), 200).body["data"].([]any) {
			if m := g.(map[string]any); m["name"] == name {
				return m["state"].(string)
			}
		}
		return ""
	}
	must(t, s.mgr("POST", "/v1/gateways/bank-a/disable", map[string]any{"reason": "double charging"}), 200)
	s.restart()
	if got := state("bank-a"); got != "disabled" {
		t.Fatalf("bank-a after a restart: %s, want disabled", got)
	}
	if p := must(t, s.post("/v1/orders/"+s.order(500)+"/payments", cardBody(500, visa, nil)), 201); p.str("gateway") != "bank-b" {
		t.Fatalf("payment with bank-a disabled: %s", p)
	}
	must(t, s.mgr("POST", "/v1/gateways/bank-a/enable", map[string]any{"reason": "fixed"}), 200)
	s.restart()
	if got := state("bank-a"); got != "closed" {
		t.Fatalf("bank-a after enable and a restart: %s, want closed", got)
	}
	wantProblem(t, s.mgr("POST", "/v1/gateways/bank-z/disable", nil), 404, "gateway_not_found")
}
