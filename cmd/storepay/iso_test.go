package main

import (
	"testing"
	"time"

	"storepay/gateway/banksim"
)

// netCharged is what a bank keeps of a payment: captured, plus held on an
// uncaptured approval, less refunds, over its live authorizations.
// An ISO 8583 switch knows a payment by its RRNs, not its id: they are
// read from the store's database.
func netCharged(s *store, b *bank, paymentID string) (live int, net int64) {
	l := b.sim.Ledger()
	rrns := map[string]bool{}
	if b.iso {
		rows, err := s.app.DB.Read().Query(`SELECT id FROM iso_records WHERE reference = ?`, paymentID)
		if err != nil {
			s.t.Fatal(err)
		}
		for rows.Next() {
			var id string
			rows.Scan(&id)
			rrns[id] = true
		}
		rows.Close()
	}
	ids := map[string]bool{}
	for _, a := range l.Authorizations {
		if (a.Reference != paymentID && !rrns[a.RRN]) || a.Status != "approved" {
			continue
		}
		live++
		ids[a.ID] = true
		net += a.CapturedAmount
		if a.CapturedAmount == 0 {
			net += a.Amount
		}
	}
	for _, r := range l.Refunds {
		if ids[r.AuthorizationID] {
			net -= r.Amount
		}
	}
	return live, net
}

// An ISO 8583 gateway takes a sale, a pre-authorization captured with a
// tip, a refund and a void, each charged once at the switch.
func TestISOGatewayOperations(t *testing.T) {
	b := startISOBank(t, "switch-a", 1)
	s := startStore(t, []*bank{b})
	waitFor(t, "the switch's sign-on", 10*time.Second, func() bool { return s.app.Router.Preferred() == "switch-a" })

	sale := must(t, s.post("/v1/orders/"+s.order(900)+"/payments", cardBody(900, visa, nil)), 201)
	if sale.str("status") != "captured" || sale.str("gateway") != "switch-a" || sale.str("auth_code") == "" {
		t.Fatalf("sale: %s", sale)
	}
	if live, net := netCharged(s, b, sale.str("id")); live != 1 || net != 900 {
		t.Fatalf("the switch holds %d approvals, %d charged; want 1 and 900", live, net)
	}
	if r := must(t, s.post("/v1/payments/"+sale.str("id")+"/refunds", map[string]any{"amount": 300}), 201); r.str("status") != "partially_refunded" {
		t.Fatalf("refund: %s", r)
	}
	if _, net := netCharged(s, b, sale.str("id")); net != 600 {
		t.Fatalf("after a refund of 300 the switch keeps %d, want 600", net)
	}

	pre := must(t, s.post("/v1/orders/"+s.order(1000)+"/payments", cardBody(1000, visa, map[string]any{"capture": false})), 201)
	if pre.str("status") != "authorized" {
		t.Fatalf("pre-authorization: %s", pre)
	}
	cap := must(t, s.post("/v1/payments/"+pre.str("id")+"/capture", map[string]any{"amount": 1000, "tip_amount": 150}), 200)
	if cap.str("status") != "captured" || cap.num("captured_amount") != 1150 {
		t.Fatalf("capture: %s", cap)
	}
	if live, net := netCharged(s, b, pre.str("id")); live != 1 || net != 1150 {
		t.Fatalf("the switch holds %d approvals, %d charged; want 1 and 1150", live, net)
	}

	other := must(t, s.post("/v1/orders/"+s.order(700)+"/payments", cardBody(700, visa, nil)), 201)
	if v := must(t, s.post("/v1/payments/"+other.str("id")+"/void", nil), 200); v.str("status") != "voided" {
		t.Fatalf("void: %s", v)
	}
	if live, net := netCharged(s, b, other.str("id")); live != 0 || net != 0 {
		t.Fatalf("a voided sale: the switch holds %d approvals, %d charged", live, net)
	}
}

// A switch that fails mid-sale: the outcome there is unknown, its
// reversal advice is acknowledged once the switch answers again, and only
// then does the payment go to the next bank. Charged once, at the next
// bank; the switch holds nothing of it.
func TestISOSilentSwitchIsReversedBeforeFailover(t *testing.T) {
	iso := startISOBank(t, "switch-a", 1)
	json := startBank(t, "bank-b", 1)
	s := startStore(t, []*bank{iso, json}, func(c *Config) { c.PaymentBudget = Duration{20 * time.Second} })
	waitFor(t, "the switch's sign-on", 10*time.Second, func() bool { return s.app.Router.Preferred() == "switch-a" })
	// The switch answers every attempt of the sale 96 (system
	// malfunction: outcome unknown), and is back for the reversal.
	if err := iso.sim.SetFaults("", banksim.Faults{Error: &banksim.Fault{Next: 3}}); err != nil {
		t.Fatal(err)
	}
	p := must(t, s.post("/v1/orders/"+s.order(900)+"/payments", cardBody(900, visa, nil)), 201)
	if p.str("status") != "captured" || p.str("gateway") != "bank-b" {
		t.Fatalf("after the silent switch: %s", p)
	}
	if live, net := netCharged(s, json, p.str("id")); live != 1 || net != 900 {
		t.Fatalf("bank-b holds %d approvals, %d charged", live, net)
	}
	if live, net := netCharged(s, iso, p.str("id")); live != 0 || net != 0 {
		t.Fatalf("the switch still holds %d approvals, %d charged, after its reversal", live, net)
	}
	if n := iso.sim.Ledger().Requests[iso.urls[0]]["0420"]; n != 1 {
		t.Fatalf("the switch received %d reversal advices (0420), want 1: %v", n, iso.sim.Ledger().Requests)
	}
}
