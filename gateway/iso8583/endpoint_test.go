package iso8583_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"storepay/gateway"
	"storepay/gateway/banksim"
	"storepay/gateway/iso8583"
)

// endpoint is the gateway.Endpoint adapter over a signed-on client.
func endpoint(t *testing.T, h *harness, vault *gateway.Vault) (*iso8583.Endpoint, *iso8583.MemoryTraces) {
	t.Helper()
	traces := &iso8583.MemoryTraces{STANs: h.stans, Now: func() time.Time { return day0 }}
	ep, err := iso8583.NewEndpoint(iso8583.EndpointConfig{Client: h.c, Traces: traces, Vault: vault})
	if err != nil {
		t.Fatal(err)
	}
	return ep, traces
}

func testVault(t *testing.T) *gateway.Vault {
	t.Helper()
	v, err := gateway.NewVault(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func authRequest(key, ref string, amount int64, capture bool) gateway.AuthRequest {
	return gateway.AuthRequest{Key: key, Reference: ref, Amount: amount, Currency: "USD", Capture: capture, Card: card}
}

func TestEndpointSaleAndRefund(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	ep, _ := endpoint(t, h, testVault(t))
	ctx := ctxFor(t, 10*time.Second)

	a, err := ep.Authorize(ctx, authRequest("k-sale", "pay_1", 1000, true))
	if err != nil || a.Status != "approved" || a.CapturedAmount != 1000 || a.Reference != "pay_1" || a.AuthCode == "" {
		t.Fatalf("Authorize = %+v, %v", a, err)
	}
	rec, ok := ep.Record(a.ID)
	if !ok || rec.Op != iso8583.OpSale || rec.Sent.MTI != "0200" || len(rec.SealedCard) == 0 {
		t.Fatalf("record = %+v", rec)
	}
	if n := charges(sim, a.ID); n != 1 {
		t.Fatalf("the ID is not the sale's RRN: charges %d", n)
	}

	r, err := ep.Refund(ctx, gateway.RefundRequest{Key: "k-refund", AuthorizationID: a.ID, Amount: 400})
	if err != nil || r.AuthorizationID != a.ID || r.Amount != 400 || r.Status != "refunded" {
		t.Fatalf("Refund = %+v, %v", r, err)
	}
	_, err = ep.Refund(ctx, gateway.RefundRequest{Key: "k-refund-2", AuthorizationID: a.ID, Amount: 601})
	wantKind(t, err, gateway.KindRejected, iso8583.ErrCodeInvalidAmount)
	if l := sim.Ledger(); len(l.Refunds) != 1 || l.Refunds[0].RRN != r.ID {
		t.Errorf("refunds = %+v", l.Refunds)
	}
}

func TestEndpointPreAuthorizationCaptureAndVoid(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	ep, _ := endpoint(t, h, testVault(t))
	ctx := ctxFor(t, 10*time.Second)

	a, err := ep.Authorize(ctx, authRequest("k-auth", "pay_2", 1000, false))
	if err != nil || a.Status != "approved" || a.CapturedAmount != 0 {
		t.Fatalf("Authorize = %+v, %v", a, err)
	}
	_, err = ep.Capture(ctx, gateway.CaptureRequest{Key: "k-cap-over", AuthorizationID: a.ID, Amount: 1300})
	wantKind(t, err, gateway.KindRejected, iso8583.ErrCodeInvalidAmount)
	c, err := ep.Capture(ctx, gateway.CaptureRequest{Key: "k-cap", AuthorizationID: a.ID, Amount: 1150})
	if err != nil || c.CapturedAmount != 1150 {
		t.Fatalf("Capture = %+v, %v", c, err)
	}
	rec, _ := ep.Record(a.ID)
	if rec.Completion == nil || rec.Completion.MTI != "0220" {
		t.Fatalf("record = %+v", rec)
	}
	// A refund names the completion, which charged the card.
	if _, err := ep.Refund(ctx, gateway.RefundRequest{Key: "k-ref", AuthorizationID: a.ID, Amount: 150}); err != nil {
		t.Fatalf("Refund: %v", err)
	}

	b, err := ep.Authorize(ctx, authRequest("k-auth-b", "pay_3", 500, false))
	if err != nil {
		t.Fatal(err)
	}
	list, err := ep.Reverse(ctx, gateway.ReverseRequest{Key: "k-void", AuthorizationID: b.ID})
	if err != nil || len(list) != 1 || list[0].Status != "reversed" {
		t.Fatalf("Reverse = %+v, %v", list, err)
	}
	if la, _ := sim.Ledger().FindRRN(b.ID); la.Status != "reversed" {
		t.Errorf("ledger = %+v", la)
	}
}

// Stored payments go as offline advices; the router's retry of the same
// key goes as 0221 and is charged once.
func TestEndpointOfflineAdviceAndItsRepeat(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	ep, _ := endpoint(t, h, testVault(t))
	req := authRequest("k-saf", "pay_4", 900, true)
	req.Stored = true

	setFaults(t, sim, url, banksim.Faults{DropAfterApply: &banksim.Fault{Next: 1}})
	_, err := ep.Authorize(ctxFor(t, 5*time.Second), req)
	wantKind(t, err, gateway.KindUnknown, "")
	h.waitReady()
	eventually(t, "the client back", func() bool { return h.c.Stats().SignOns == 2 })

	a, err := ep.Authorize(ctxFor(t, 5*time.Second), req)
	if err != nil || a.Status != "approved" {
		t.Fatalf("repeat = %+v, %v", a, err)
	}
	l := sim.Ledger()
	if l.Calls(url, "0220") != 1 || l.Calls(url, "0221") != 1 {
		t.Errorf("calls = %v", l.Requests[url])
	}
	if n := charges(sim, a.ID); n != 1 {
		t.Errorf("charges = %d", n)
	}
}

// An unknown outcome is resolved by a reversal advice (68) of what the
// payment may hold: the only way, with no lookup.
func TestEndpointUnknownOutcomeResolvedByReversal(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	ep, _ := endpoint(t, h, testVault(t))

	_, err := ep.Find(ctxFor(t, time.Second), gateway.Lookup{Reference: "pay_5"})
	wantKind(t, err, gateway.KindRejected, iso8583.CodeNotSupported)

	setFaults(t, sim, url, banksim.Faults{DropAfterApply: &banksim.Fault{Next: 1}})
	_, err = ep.Authorize(ctxFor(t, 5*time.Second), authRequest("k-unknown", "pay_5", 700, true))
	wantKind(t, err, gateway.KindUnknown, "")
	recs := ep.Records("pay_5")
	if len(recs) != 1 || recs[0].Status != iso8583.RecordUnknown {
		t.Fatalf("records = %+v", recs)
	}
	if n := charges(sim, recs[0].ID); n != 1 {
		t.Fatalf("charges = %d: the bank did the work", n)
	}
	h.waitReady()
	eventually(t, "the client back", func() bool { return h.c.Stats().SignOns == 2 })

	list, err := ep.Reverse(ctxFor(t, 5*time.Second), gateway.ReverseRequest{Key: "k-resolve", Reference: "pay_5"})
	if err != nil || len(list) != 1 || list[0].Status != "reversed" {
		t.Fatalf("Reverse = %+v, %v", list, err)
	}
	if n := charges(sim, recs[0].ID); n != 0 {
		t.Errorf("charges = %d after the reversal", n)
	}
	if got := sim.Ledger().Calls(url, "0420"); got != 1 {
		t.Errorf("0420 calls = %d", got)
	}
}

// After a restart the records come back from storage; without them, or
// without the card, nothing is sent.
func TestEndpointRecordsSurviveARestartThroughTheCaller(t *testing.T) {
	_, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	vault := testVault(t)
	ep, traces := endpoint(t, h, vault)
	ctx := ctxFor(t, 10*time.Second)
	a, err := ep.Authorize(ctx, authRequest("k-a", "pay_6", 1000, false))
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := ep.Record(a.ID)
	stored, err := json.Marshal(rec)
	if err != nil {
		t.Fatal(err)
	}

	restarted, err := iso8583.NewEndpoint(iso8583.EndpointConfig{Client: h.c, Traces: traces, Vault: vault})
	if err != nil {
		t.Fatal(err)
	}
	_, err = restarted.Capture(ctx, gateway.CaptureRequest{Key: "k-c", AuthorizationID: a.ID, Amount: 1000})
	wantKind(t, err, gateway.KindRejected, iso8583.CodeUnknownAuthorization)

	var back iso8583.Record
	if err := json.Unmarshal(stored, &back); err != nil {
		t.Fatal(err)
	}
	restarted.Restore(back)
	if c, err := restarted.Capture(ctx, gateway.CaptureRequest{Key: "k-c", AuthorizationID: a.ID, Amount: 1000}); err != nil || c.CapturedAmount != 1000 {
		t.Fatalf("Capture after Restore = %+v, %v", c, err)
	}

	noVault, _ := iso8583.NewEndpoint(iso8583.EndpointConfig{Client: h.c, Traces: traces})
	noVault.Restore(back)
	_, err = noVault.Reverse(ctx, gateway.ReverseRequest{Key: "k-v", AuthorizationID: a.ID})
	wantKind(t, err, gateway.KindRejected, iso8583.CodeCardUnavailable)
}

func TestEndpointHealthAndSettlement(t *testing.T) {
	_, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	ep, _ := endpoint(t, h, nil)
	if err := ep.Health(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatalf("Health: %v", err)
	}
	if ep.URL() != url {
		t.Errorf("URL = %q", ep.URL())
	}
	_, err := ep.Settlement(ctxFor(t, time.Second), "2026-11-21")
	wantKind(t, err, gateway.KindRejected, iso8583.CodeNotSupported)
	d, err := ep.Authorize(ctxFor(t, 5*time.Second), gateway.AuthRequest{Key: "k-d", Reference: "pay_7", Amount: 100, Currency: "USD", Capture: true,
		Card: gateway.Card{PAN: "4000000000000002", ExpMonth: 12, ExpYear: 2030}})
	if err != nil || d.Status != "declined" || d.DeclineCode != "do_not_honor" {
		t.Fatalf("Authorize = %+v, %v", d, err)
	}
}

// A repeat that the switch turns away (91: nothing done by it) says
// nothing of an earlier attempt it may have applied: the outcome stays
// unknown, never "nothing done", and only the reversal settles it.
// (Found by the simulator, seed 9198: the sale ended declined while
// charged.)
func TestEndpointRepeatTurnedAwayKeepsTheOutcomeUnknown(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	ep, _ := endpoint(t, h, testVault(t))

	setFaults(t, sim, url, banksim.Faults{DropAfterApply: &banksim.Fault{Next: 1}})
	_, err := ep.Authorize(ctxFor(t, 5*time.Second), authRequest("k-turned", "pay_9", 900, true))
	wantKind(t, err, gateway.KindUnknown, "")
	h.waitReady()
	eventually(t, "the client back", func() bool { return h.c.Stats().SignOns == 2 })

	setFaults(t, sim, url, banksim.Faults{NotProcessed: &banksim.Fault{Next: 1}})
	_, err = ep.Authorize(ctxFor(t, 5*time.Second), authRequest("k-turned", "pay_9", 900, true))
	wantKind(t, err, gateway.KindUnknown, "")
	if gateway.NothingDone(err) {
		t.Fatalf("a 91 to the repeat read as nothing done: %v", err)
	}
	recs := ep.Records("pay_9")
	if len(recs) != 1 || recs[0].Status != iso8583.RecordUnknown {
		t.Fatalf("records = %+v", recs)
	}
	if err := ep.ResolveUnknown(ctxFor(t, 5*time.Second), authRequest("k-turned", "pay_9", 900, true)); err != nil {
		t.Fatalf("ResolveUnknown: %v", err)
	}
	if n := charges(sim, recs[0].ID); n != 0 {
		t.Errorf("charges = %d after the reversal", n)
	}
}

// An answer the adapter holds is not asked again: the repeat under the
// same key returns it and sends nothing.
func TestEndpointKnownAnswerIsNotAskedAgain(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	ep, _ := endpoint(t, h, testVault(t))
	ctx := ctxFor(t, 5*time.Second)

	a, err := ep.Authorize(ctx, authRequest("k-known", "pay_10", 500, true))
	if err != nil || a.Status != "approved" {
		t.Fatalf("Authorize = %+v, %v", a, err)
	}
	setFaults(t, sim, url, banksim.Faults{NotProcessed: &banksim.Fault{Next: 1}})
	b, err := ep.Authorize(ctx, authRequest("k-known", "pay_10", 500, true))
	if err != nil || b.ID != a.ID || b.Status != "approved" || b.CapturedAmount != 500 {
		t.Fatalf("repeat = %+v, %v; want the first answer", b, err)
	}
	if got := sim.Ledger().Calls(url, "0200"); got != 1 {
		t.Errorf("0200 calls = %d, want 1", got)
	}
}
