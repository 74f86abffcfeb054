package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
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
	waitSignedOn(t, s)

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
	waitSignedOn(t, s)
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

// A payment accepted offline is forwarded to the switch as an offline
// advice (0220, 38 = Y3). Its answer is lost (the connection dropped after
// the switch did the work): the advice is repeated as a 0221 under the
// same RRN, answered with the first answer, and charged once.
func TestISOOfflineAdviceRepeatedAfterALostAnswer(t *testing.T) {
	iso := startISOBank(t, "switch-a", 1)
	s := startStore(t, []*bank{iso}, func(c *Config) { c.Forwarding.Interval = Duration{50 * time.Millisecond} })
	waitSignedOn(t, s)
	p := must(t, s.post("/v1/orders/"+s.order(1200)+"/payments", cardBody(1200, visa, map[string]any{"offline_behavior": "force_offline"})), 201)
	if p.str("status") != "stored" {
		t.Fatalf("force_offline: %s", p)
	}
	if err := iso.sim.SetFaults("", banksim.Faults{DropAfterApply: &banksim.Fault{Next: 1}}); err != nil {
		t.Fatal(err)
	}
	got := s.waitPayment(p.str("id"), "captured")
	if live, net := netCharged(s, iso, got.str("id")); live != 1 || net != 1200 {
		t.Fatalf("the switch holds %d approvals, %d charged; want 1 and 1200", live, net)
	}
	reqs := iso.sim.Ledger().Requests[iso.urls[0]]
	if reqs["0220"] != 1 || reqs["0221"] < 1 {
		t.Fatalf("the switch received %d 0220 and %d 0221; want the advice once and its repeat: %v", reqs["0220"], reqs["0221"], reqs)
	}
}

// A switch answering 03 (invalid merchant) is a configuration fault, as
// an HTTP 401: the gateway is disabled until a manager enables it, and
// the payment goes to the next bank.
func TestISOInvalidMerchantDisablesTheGateway(t *testing.T) {
	iso := startISOBank(t, "switch-a", 1)
	json := startBank(t, "bank-b", 1)
	s := startStore(t, []*bank{iso, json})
	waitSignedOn(t, s)
	if err := iso.sim.SetFaults("", banksim.Faults{Unauthorized: &banksim.Fault{}}); err != nil {
		t.Fatal(err)
	}
	p := must(t, s.post("/v1/orders/"+s.order(900)+"/payments", cardBody(900, visa, nil)), 201)
	if p.str("status") != "captured" || p.str("gateway") != "bank-b" {
		t.Fatalf("after 03: %s", p)
	}
	var state string
	for _, g := range s.mgr("GET", "/v1/gateways", nil).body["data"].([]any) {
		if m := g.(map[string]any); m["name"] == "switch-a" {
			state, _ = m["state"].(string)
		}
	}
	if state != "disabled" {
		t.Fatalf("switch-a is %q after 03, want disabled", state)
	}
}

// waitSignedOn waits until every ISO 8583 client of the store signed on.
func waitSignedOn(t *testing.T, s *store) {
	t.Helper()
	waitFor(t, "the switches' sign-on", 10*time.Second, func() bool {
		for _, c := range s.app.iso.clients {
			if !c.Ready() {
				return false
			}
		}
		return true
	})
}

// An ISO 8583 gateway's settlement report names each operation by its
// RRN (psp_reference) and may leave merchant_reference empty: a sale, a
// pre-authorization settled under its completion's RRN, and a refund all
// match, from the report given as a file.
func TestISOReconcileByRRN(t *testing.T) {
	iso := startISOBank(t, "switch-a", 1)
	s := startStore(t, []*bank{iso})
	waitSignedOn(t, s)
	day := today(t, func() {
		sale := must(t, s.post("/v1/orders/"+s.order(900)+"/payments", cardBody(900, visa, nil)), 201)
		must(t, s.post("/v1/payments/"+sale.str("id")+"/refunds", map[string]any{"amount": 200}), 201)
		pre := must(t, s.post("/v1/orders/"+s.order(1000)+"/payments", cardBody(1000, visa, map[string]any{"capture": false})), 201)
		must(t, s.post("/v1/payments/"+pre.str("id")+"/capture", map[string]any{"amount": 1000, "tip_amount": 100}), 200)
	})
	if err := iso.sim.CloseDay(day); err != nil {
		t.Fatal(err)
	}
	report, ok := iso.sim.Settlement("", day)
	if !ok {
		t.Fatal("no report")
	}
	// As a bank written from the profile may: no merchant_reference.
	lines := strings.Split(string(report), "\n")
	header := strings.Split(lines[0], ",")
	col := slices.Index(header, "merchant_reference")
	for i := 1; i < len(lines); i++ {
		if f := strings.Split(lines[i], ","); len(f) > col && col >= 0 {
			f[col] = ""
			lines[i] = strings.Join(f, ",")
		}
	}
	file := filepath.Join(t.TempDir(), "switch-a.csv")
	if err := os.WriteFile(file, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, err := s.reconcileCmd("--config", s.writeConfig(), "--date", day, "--settlement", "switch-a="+file, "--json", "", "--csv", "")
	if code != 0 || err != nil {
		t.Fatalf("exit code %d (%v), want 0 (everything matched)\n%s", code, err, out)
	}
	// Without the file: an ISO gateway's report is not fetched.
	if code, out, _ := s.reconcileCmd("--config", s.writeConfig(), "--date", day, "--json", "", "--csv", ""); code != 2 {
		t.Fatalf("without --settlement: exit %d, want 2\n%s", code, out)
	}
}
