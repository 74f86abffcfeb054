package iso8583_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"storepay/gateway"
	"storepay/gateway/banksim"
	"storepay/gateway/iso8583"
)

// These tests run the client against the banksim switch over real TCP on
// loopback, and against a raw fake switch (fakeswitch_test.go) for the
// input banksim never sends.

var day0 = time.Date(2026, 11, 21, 10, 15, 0, 0, time.UTC)

// startSwitch returns a simulated bank with one ISO 8583 listener.
func startSwitch(t *testing.T, cfg banksim.Config) (*banksim.Sim, string) {
	t.Helper()
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return day0 }
	}
	sim := banksim.New(cfg)
	t.Cleanup(func() {
		if err := sim.Close(); err != nil {
			t.Errorf("sim Close: %v", err)
		}
	})
	url, err := sim.ListenISO8583("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return sim, url
}

// harness is a client and the STAN allocator it shares with the test,
// which plays the caller (it allocates the traces).
type harness struct {
	t      *testing.T
	c      *iso8583.Client
	stans  *iso8583.MemorySTANs
	late   chan iso8583.LateAnswer
	closed atomic.Bool
}

// open starts a client of url and waits until it signed on unless
// noWait.
func open(t *testing.T, url string, change func(*iso8583.Config)) *harness {
	t.Helper()
	h := &harness{t: t, stans: &iso8583.MemorySTANs{}, late: make(chan iso8583.LateAnswer, 100)}
	cfg := iso8583.Config{
		URL:          url,
		Gateway:      "switch-a",
		Terminal:     terminal,
		STANs:        h.stans,
		Timeout:      5 * time.Second,
		BackoffMin:   10 * time.Millisecond,
		BackoffMax:   50 * time.Millisecond,
		OnLateAnswer: func(la iso8583.LateAnswer) { h.late <- la },
	}
	if change != nil {
		change(&cfg)
	}
	c, err := iso8583.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Open(); err != nil {
		t.Fatal(err)
	}
	h.c = c
	t.Cleanup(func() { h.close() })
	return h
}

func (h *harness) close() {
	if h.closed.Swap(true) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.c.Close(ctx); err != nil {
		h.t.Errorf("client Close: %v", err)
	}
}

func openReady(t *testing.T, url string, change func(*iso8583.Config)) *harness {
	t.Helper()
	h := open(t, url, change)
	h.waitReady()
	return h
}

func (h *harness) waitReady() {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := h.c.WaitReady(ctx); err != nil {
		h.t.Fatalf("client never signed on: %v (%+v)", err, h.c.Stats())
	}
}

// awaitLate returns the next late answer, failing the test after a few
// seconds.
func (h *harness) awaitLate() iso8583.LateAnswer {
	h.t.Helper()
	select {
	case la := <-h.late:
		return la
	case <-time.After(5 * time.Second):
		h.t.Fatalf("no late answer (stats %+v)", h.c.Stats())
		return iso8583.LateAnswer{}
	}
}

// trace allocates a trace as storepay would: STAN from the shared
// allocator, an RRN made from it.
func (h *harness) trace() iso8583.Trace {
	s, _ := h.stans.NextSTAN(context.Background())
	return iso8583.Trace{STAN: s, RRN: iso8583.MakeRRN(day0, s), Time: day0.Add(time.Duration(s) * time.Second)}
}

func (h *harness) purchase(amount int64) iso8583.Purchase {
	return iso8583.Purchase{Trace: h.trace(), Card: card, Amount: amount, Currency: "USD"}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// wantKind checks err's classification.
func wantKind(t *testing.T, err error, kind gateway.Kind, code string) *gateway.Error {
	t.Helper()
	e := gateway.AsError(err)
	if e == nil {
		t.Fatalf("err = %v, want a *gateway.Error of kind %v", err, kind)
	}
	if e.Kind != kind || (code != "" && e.Code != code) {
		t.Fatalf("err = %v (kind %v, code %q), want kind %v code %q", err, e.Kind, e.Code, kind, code)
	}
	if e.Gateway != "switch-a" {
		t.Errorf("error of gateway %q", e.Gateway)
	}
	return e
}

func wantApproved(t *testing.T, ans iso8583.Answer, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("err = %v", err)
	}
	if !ans.Approved() || ans.AuthCode == "" {
		t.Fatalf("answer = %+v, want approved with a code", ans)
	}
}

// eventually polls cond until it holds or a few seconds passed.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func charges(sim *banksim.Sim, rrn string) int {
	n := 0
	for _, a := range sim.Ledger().Authorizations {
		if (a.RRN == rrn || a.CaptureRRN == rrn) && a.Status == "approved" {
			n++
		}
	}
	return n
}

func setFaults(t *testing.T, sim *banksim.Sim, url string, f banksim.Faults) {
	t.Helper()
	if err := sim.SetFaults(url, f); err != nil {
		t.Fatal(err)
	}
}

func clearFaults(t *testing.T, sim *banksim.Sim) {
	t.Helper()
	if err := sim.ClearFaults(); err != nil {
		t.Fatal(err)
	}
}

func TestSignOnAndEcho(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	if got := sim.Ledger().Calls(url, "0800"); got != 1 {
		t.Errorf("0800 before any request = %d, want 1 (the sign-on)", got)
	}
	if err := h.c.Echo(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatalf("Echo: %v", err)
	}
	if got := sim.Ledger().Calls(url, "0800"); got != 2 {
		t.Errorf("0800 = %d, want 2", got)
	}
	if s := h.c.Stats(); s.SignOns != 1 || s.ConnectFailures != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestSale(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	p := h.purchase(1250)
	ans, err := h.c.Purchase(ctxFor(t, 5*time.Second), p)
	wantApproved(t, ans, err)
	if ans.MTI != "0210" || ans.RRN != p.Trace.RRN || ans.Sent != p.Ref() {
		t.Errorf("answer = %+v", ans)
	}
	if a, ok := sim.Ledger().FindRRN(p.Trace.RRN); !ok || a.CapturedAmount != 1250 || a.AuthCode != ans.AuthCode {
		t.Errorf("ledger = %+v", a)
	}
}

func TestDeclineIsAnAnswer(t *testing.T) {
	_, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	p := h.purchase(100)
	p.Card.PAN = "4000000000009995"
	ans, err := h.c.Purchase(ctxFor(t, 5*time.Second), p)
	if err != nil || ans.Approved() || ans.DeclineCode() != "insufficient_funds" || ans.ResponseCode != "51" {
		t.Fatalf("Purchase = %+v, %v", ans, err)
	}
}

func TestPreAuthorizationAndCompletion(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	ctx := ctxFor(t, 10*time.Second)
	auth := iso8583.Authorization{Trace: h.trace(), Card: card, Amount: 2000, Currency: "USD"}
	ans, err := h.c.Authorize(ctx, auth)
	wantApproved(t, ans, err)
	if ans.MTI != "0110" {
		t.Errorf("MTI %s", ans.MTI)
	}

	over := iso8583.Completion{Trace: h.trace(), Card: card, Amount: 2401, Currency: "USD", AuthCode: ans.AuthCode, Original: ans.Sent}
	_, err = h.c.Complete(ctx, over)
	wantKind(t, err, gateway.KindRejected, iso8583.ErrCodeInvalidAmount)
	if a, _ := sim.Ledger().FindRRN(auth.Trace.RRN); a.CapturedAmount != 0 {
		t.Fatalf("a refused completion captured %d", a.CapturedAmount)
	}

	comp := iso8583.Completion{Trace: h.trace(), Card: card, Amount: 2400, Currency: "USD", AuthCode: ans.AuthCode, Original: ans.Sent}
	cans, err := h.c.Complete(ctx, comp)
	wantApproved(t, cans, err)
	if cans.MTI != "0230" || cans.Sent.MTI != "0220" {
		t.Errorf("answer = %+v", cans)
	}
	if a, _ := sim.Ledger().FindRRN(auth.Trace.RRN); a.CapturedAmount != 2400 || a.CaptureRRN != comp.Trace.RRN {
		t.Errorf("ledger = %+v", a)
	}
}

func TestRefund(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	ctx := ctxFor(t, 10*time.Second)
	sale, err := h.c.Purchase(ctx, h.purchase(1000))
	wantApproved(t, sale, err)

	r := iso8583.Refund{Trace: h.trace(), Card: card, Amount: 700, Currency: "USD", Original: sale.Sent}
	ans, err := h.c.Refund(ctx, r)
	if err != nil || !ans.Approved() {
		t.Fatalf("Refund = %+v, %v", ans, err)
	}
	_, err = h.c.Refund(ctx, iso8583.Refund{Trace: h.trace(), Card: card, Amount: 301, Currency: "USD", Original: sale.Sent})
	wantKind(t, err, gateway.KindRejected, iso8583.ErrCodeInvalidAmount)
	_, err = h.c.Refund(ctx, iso8583.Refund{Trace: h.trace(), Card: card, Amount: 1, Currency: "USD", Original: iso8583.Original{MTI: "0200", STAN: 999, TransmissionTime: "0101000000"}})
	wantKind(t, err, gateway.KindRejected, iso8583.ErrCodeInvalidTransaction)
	if l := sim.Ledger(); len(l.Refunds) != 1 || l.Refunds[0].RRN != r.Trace.RRN {
		t.Errorf("refunds = %+v", l.Refunds)
	}
}

func TestReversalAdvice(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	ctx := ctxFor(t, 10*time.Second)

	t.Run("OfASale", func(t *testing.T) {
		p := h.purchase(900)
		sale, err := h.c.Purchase(ctx, p)
		wantApproved(t, sale, err)
		rev := iso8583.Reversal{Trace: h.trace(), Card: card, Amount: 900, Currency: "USD", Reason: iso8583.ReasonCustomerCancellation, Original: sale.Sent}
		ans, err := h.c.Reverse(ctx, rev)
		if err != nil || !ans.Approved() || ans.MTI != "0430" {
			t.Fatalf("Reverse = %+v, %v", ans, err)
		}
		if n := charges(sim, p.Trace.RRN); n != 0 {
			t.Errorf("charges = %d after the reversal", n)
		}
	})
	t.Run("OfAnOperationNeverReceived", func(t *testing.T) {
		before := sim.Ledger()
		never := h.purchase(900) // its STAN and RRN allocated, never sent
		rev := iso8583.Reversal{Trace: h.trace(), Card: card, Amount: 900, Currency: "USD", Reason: iso8583.ReasonNoAnswer, Original: never.Ref()}
		ans, err := h.c.Reverse(ctx, rev)
		if err != nil || !ans.Approved() {
			t.Fatalf("Reverse = %+v, %v", ans, err)
		}
		after := sim.Ledger()
		if len(after.Authorizations) != len(before.Authorizations) || len(after.Refunds) != len(before.Refunds) {
			t.Fatal("the ledger changed")
		}
		for i := range before.Authorizations {
			if before.Authorizations[i] != after.Authorizations[i] {
				t.Errorf("authorization %d changed", i)
			}
		}
	})
}

// A sale sent twice with the same trace (a resend after an unknown
// outcome) is answered with the first answer and charged once.
func TestDuplicateRRNIsAnsweredOnce(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	ctx := ctxFor(t, 10*time.Second)
	p := h.purchase(1500)
	first, err := h.c.Purchase(ctx, p)
	wantApproved(t, first, err)
	second, err := h.c.Purchase(ctx, p)
	wantApproved(t, second, err)
	if first.AuthCode != second.AuthCode {
		t.Errorf("auth codes %q and %q", first.AuthCode, second.AuthCode)
	}
	if n := charges(sim, p.Trace.RRN); n != 1 {
		t.Errorf("charges = %d, want 1", n)
	}
}

// An offline advice whose answer does not come is repeated as 0221 with
// the same 11, 7 and 37; the answer that comes after its caller gave up
// is late: logged, counted, nothing else. Charged once.
func TestAdviceRepeatAfterNoAnswer(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	adv := iso8583.OfflineAdvice{Trace: h.trace(), Card: card, Amount: 800, Currency: "USD"}

	setFaults(t, sim, url, banksim.Faults{Blackhole: &banksim.Fault{}})
	ans, err := h.c.Advise(ctxFor(t, 200*time.Millisecond), adv)
	e := wantKind(t, err, gateway.KindUnknown, "")
	if !errors.Is(e, context.DeadlineExceeded) {
		t.Errorf("err = %v, want it to wrap the deadline", err)
	}
	if ans.Sent != adv.Ref() {
		t.Errorf("Sent = %+v with the error, want %+v", ans.Sent, adv.Ref())
	}

	clearFaults(t, sim) // the held advice carries on: its answer comes late
	la := h.awaitLate()
	if la.RRN != adv.Trace.RRN || la.ResponseCode != "00" || la.Request != adv.Ref() || la.MTI != "0230" {
		t.Errorf("late answer = %+v", la)
	}
	if s := h.c.Stats(); s.LateAnswers != 1 || len(s.BadInput) != 0 || s.Disconnects != 0 {
		t.Errorf("stats = %+v: a late answer is not bad input", s)
	}

	adv.Repeat = true
	rep, err := h.c.Advise(ctxFor(t, 5*time.Second), adv)
	wantApproved(t, rep, err)
	if rep.AuthCode != la.AuthCode {
		t.Errorf("repeat auth code %q, first %q", rep.AuthCode, la.AuthCode)
	}
	if n := charges(sim, adv.Trace.RRN); n != 1 {
		t.Errorf("charges = %d, want 1", n)
	}
	if got := sim.Ledger().Calls(url, "0221"); got != 1 {
		t.Errorf("0221 calls = %d", got)
	}
}

// A reversal advice answered 91 is repeated as 0421 until it gets
// another answer.
func TestReversalRepeatAfter91(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	ctx := ctxFor(t, 10*time.Second)
	p := h.purchase(400)
	sale, err := h.c.Purchase(ctx, p)
	wantApproved(t, sale, err)

	rev := iso8583.Reversal{Trace: h.trace(), Card: card, Amount: 400, Currency: "USD", Reason: iso8583.ReasonCustomerCancellation, Original: sale.Sent}
	setFaults(t, sim, url, banksim.Faults{NotProcessed: &banksim.Fault{}})
	_, err = h.c.Reverse(ctx, rev)
	wantKind(t, err, gateway.KindNotProcessed, iso8583.ErrCodeNotProcessed)
	if n := charges(sim, p.Trace.RRN); n != 1 {
		t.Fatalf("a 91 did work: charges %d", n)
	}
	clearFaults(t, sim)
	rev.Repeat = true
	ans, err := h.c.Reverse(ctx, rev)
	if err != nil || !ans.Approved() || ans.Sent.MTI != "0420" {
		t.Fatalf("repeat = %+v, %v", ans, err)
	}
	if n := charges(sim, p.Trace.RRN); n != 0 {
		t.Errorf("charges = %d after the reversal", n)
	}
	if got := sim.Ledger().Calls(url, "0421"); got != 1 {
		t.Errorf("0421 calls = %d", got)
	}
}

func TestFaultAnswers(t *testing.T) {
	tests := []struct {
		name   string
		faults banksim.Faults
		kind   gateway.Kind
		code   string
		done   bool // the bank did the work
	}{
		{"91IsNothingDone", banksim.Faults{NotProcessed: &banksim.Fault{Next: 1}}, gateway.KindNotProcessed, iso8583.ErrCodeNotProcessed, false},
		{"96IsUnknown", banksim.Faults{Error: &banksim.Fault{Next: 1}}, gateway.KindUnknown, iso8583.ErrCodeSystemMalfunction, false},
		{"96AfterTheWorkIsUnknown", banksim.Faults{ErrorAfterApply: &banksim.Fault{Next: 1}}, gateway.KindUnknown, iso8583.ErrCodeSystemMalfunction, true},
		{"03IsAConfigurationFault", banksim.Faults{Unauthorized: &banksim.Fault{Next: 1}}, gateway.KindUnauthorized, iso8583.ErrCodeInvalidMerchant, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, url := startSwitch(t, banksim.Config{})
			h := openReady(t, url, nil)
			setFaults(t, sim, url, tt.faults)
			p := h.purchase(300)
			_, err := h.c.Purchase(ctxFor(t, 5*time.Second), p)
			wantKind(t, err, tt.kind, tt.code)
			if got := charges(sim, p.Trace.RRN) == 1; got != tt.done {
				t.Errorf("work done = %v, want %v", got, tt.done)
			}
			// The same trace again (the fault was for one message):
			// the real answer, charged once.
			ans, err := h.c.Purchase(ctxFor(t, 5*time.Second), p)
			wantApproved(t, ans, err)
			if n := charges(sim, p.Trace.RRN); n != 1 {
				t.Errorf("charges = %d, want 1", n)
			}
		})
	}
}

func TestFaultLatency(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	setFaults(t, sim, url, banksim.Faults{Latency: &banksim.Latency{Fixed: 100 * time.Millisecond}})
	begin := time.Now()
	ans, err := h.c.Purchase(ctxFor(t, 5*time.Second), h.purchase(100))
	wantApproved(t, ans, err)
	if took := time.Since(begin); took < 100*time.Millisecond {
		t.Errorf("took %v", took)
	}

	t.Run("AnswerAfterTheTimeoutIsLate", func(t *testing.T) {
		setFaults(t, sim, url, banksim.Faults{Latency: &banksim.Latency{Fixed: 300 * time.Millisecond}})
		p := h.purchase(100)
		_, err := h.c.Purchase(ctxFor(t, 50*time.Millisecond), p)
		wantKind(t, err, gateway.KindUnknown, "")
		la := h.awaitLate()
		if la.RRN != p.Trace.RRN || la.ResponseCode != "00" {
			t.Errorf("late answer = %+v", la)
		}
		// Resolved as the profile says: a reversal advice (68).
		clearFaults(t, sim)
		rev := iso8583.Reversal{Trace: h.trace(), Card: card, Amount: 100, Currency: "USD", Reason: iso8583.ReasonNoAnswer, Original: p.Ref()}
		if ans, err := h.c.Reverse(ctxFor(t, 5*time.Second), rev); err != nil || !ans.Approved() {
			t.Fatalf("Reverse = %+v, %v", ans, err)
		}
		if n := charges(sim, p.Trace.RRN); n != 0 {
			t.Errorf("charges = %d after the reversal", n)
		}
	})
}

func TestFaultBlackholeThenReversal(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	setFaults(t, sim, url, banksim.Faults{Blackhole: &banksim.Fault{Next: 1}})
	p := h.purchase(500)
	_, err := h.c.Purchase(ctxFor(t, 100*time.Millisecond), p)
	wantKind(t, err, gateway.KindUnknown, "")
	if err := h.c.Echo(ctxFor(t, 5*time.Second)); err != nil {
		t.Fatalf("the connection is fine: Echo = %v", err)
	}
	rev := iso8583.Reversal{Trace: h.trace(), Card: card, Amount: 500, Currency: "USD", Reason: iso8583.ReasonNoAnswer, Original: p.Ref()}
	if ans, err := h.c.Reverse(ctxFor(t, 5*time.Second), rev); err != nil || !ans.Approved() {
		t.Fatalf("Reverse = %+v, %v", ans, err)
	}
	clearFaults(t, sim) // the held sale carries on after its reversal
	h.awaitLate()
	// The bank approved after the reversal it acknowledged as "never
	// received": storepay's late-answer handler reports it, it changes
	// nothing here, and reconciliation sees the charge.
	if n := charges(sim, p.Trace.RRN); n != 1 {
		t.Errorf("charges = %d", n)
	}
}

func TestFaultDropAfterApply(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	setFaults(t, sim, url, banksim.Faults{DropAfterApply: &banksim.Fault{Next: 1}})
	p := h.purchase(700)
	_, err := h.c.Purchase(ctxFor(t, 5*time.Second), p)
	wantKind(t, err, gateway.KindUnknown, "")
	if n := charges(sim, p.Trace.RRN); n != 1 {
		t.Fatalf("charges = %d, want the work done", n)
	}
	h.waitReady() // reconnected and signed on again
	eventually(t, "a second sign-on", func() bool { return h.c.Stats().SignOns == 2 })
	rev := iso8583.Reversal{Trace: h.trace(), Card: card, Amount: 700, Currency: "USD", Reason: iso8583.ReasonNoAnswer, Original: p.Ref()}
	if ans, err := h.c.Reverse(ctxFor(t, 5*time.Second), rev); err != nil || !ans.Approved() {
		t.Fatalf("Reverse = %+v, %v", ans, err)
	}
	if n := charges(sim, p.Trace.RRN); n != 0 {
		t.Errorf("charges = %d after the reversal", n)
	}
	if s := h.c.Stats(); s.Disconnects != 1 {
		t.Errorf("stats = %+v", s)
	}
}

func TestFaultRefuse(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	setFaults(t, sim, url, banksim.Faults{Refuse: true})
	eventually(t, "the client to see the connection lost", func() bool { return !h.c.Ready() })
	// Refused: nothing sent, at once.
	eventually(t, "a refused connection", func() bool { return h.c.Stats().ConnectFailures > 0 })
	p := h.purchase(100)
	_, err := h.c.Purchase(ctxFor(t, 5*time.Second), p)
	wantKind(t, err, gateway.KindNotSent, "")
	if err := h.c.Echo(ctxFor(t, 5*time.Second)); gateway.AsError(err) == nil || gateway.AsError(err).Kind != gateway.KindNotSent {
		t.Errorf("Echo = %v", err)
	}
	clearFaults(t, sim)
	h.waitReady()
	ans, err := h.c.Purchase(ctxFor(t, 5*time.Second), p)
	wantApproved(t, ans, err)
}

func TestSignOnRefused(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	setFaults(t, sim, url, banksim.Faults{Unauthorized: &banksim.Fault{}})
	h := open(t, url, nil)
	eventually(t, "a refused sign-on", func() bool { return h.c.Stats().ConnectFailures > 0 })
	var err error
	eventually(t, "requests failing as unauthorized", func() bool {
		_, err = h.c.Purchase(ctxFor(t, 5*time.Second), h.purchase(100))
		e := gateway.AsError(err)
		return e != nil && e.Kind == gateway.KindUnauthorized
	})
	wantKind(t, err, gateway.KindUnauthorized, iso8583.ErrCodeInvalidMerchant)
	if got := sim.Ledger().Calls(url, "0200"); got != 0 {
		t.Errorf("0200 sent = %d before a sign-on", got)
	}
	clearFaults(t, sim)
	h.waitReady()
}

func TestSwitchDownAtStart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there
	h := open(t, "tcp://"+addr, nil)
	eventually(t, "a failed attempt", func() bool { return h.c.Stats().ConnectFailures > 0 })
	_, err = h.c.Purchase(ctxFor(t, 5*time.Second), h.purchase(100))
	wantKind(t, err, gateway.KindNotSent, "")
}

// Many requests in flight when the connection is cut: each ends with an
// answer, unknown, or not sent; none is lost; the unknown ones, resent
// with their trace once the client is back, are answered without a
// second charge.
func TestConnectionCutWithManyInFlight(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	setFaults(t, sim, "", banksim.Faults{Latency: &banksim.Latency{Jitter: 300 * time.Millisecond}})

	const n, after = 60, 10 // in flight at the cut, sent after it
	type result struct {
		p   iso8583.Purchase
		ans iso8583.Answer
		err error
	}
	results := make([]result, n+after)
	var wg sync.WaitGroup
	var finished atomic.Int32
	send := func(i int) {
		results[i].p = h.purchase(int64(100 + i))
		wg.Go(func() {
			results[i].ans, results[i].err = h.c.Purchase(ctxFor(t, 5*time.Second), results[i].p)
			finished.Add(1)
		})
	}
	for i := range n {
		send(i)
	}
	eventually(t, "a quarter of the answers", func() bool { return finished.Load() >= n/4 })
	setFaults(t, sim, url, banksim.Faults{Refuse: true}) // the latency stays: it is set on every listener
	eventually(t, "the client to see the cut", func() bool { return !h.c.Ready() })
	for i := n; i < n+after; i++ {
		send(i)
	}
	wg.Wait()

	var answered, unknown, notSent int
	for i, r := range results {
		switch e := gateway.AsError(r.err); {
		case r.err == nil:
			answered++
			if !r.ans.Approved() || charges(sim, r.p.Trace.RRN) != 1 {
				t.Errorf("request %d answered %+v but charged %d", i, r.ans, charges(sim, r.p.Trace.RRN))
			}
		case e != nil && e.Kind == gateway.KindUnknown:
			unknown++
		case e != nil && e.Kind == gateway.KindNotSent:
			notSent++
		default:
			t.Errorf("request %d: %v", i, r.err)
		}
	}
	t.Logf("answered %d, unknown %d, not sent %d", answered, unknown, notSent)
	if unknown == 0 || answered == 0 || notSent < after {
		t.Error("want answered, unknown and not sent requests")
	}

	clearFaults(t, sim)
	h.waitReady()
	for i, r := range results {
		if r.err == nil {
			continue
		}
		ans, err := h.c.Purchase(ctxFor(t, 5*time.Second), r.p)
		if err != nil || !ans.Approved() {
			t.Errorf("request %d resent: %+v, %v", i, ans, err)
		}
	}
	for i, r := range results {
		if got := charges(sim, r.p.Trace.RRN); got != 1 {
			t.Errorf("request %d charged %d times", i, got)
		}
	}
	if got := len(sim.Ledger().Authorizations); got != n+after {
		t.Errorf("%d authorizations for %d sales", got, n+after)
	}
}

func TestDuplicateSTANInFlightIsRefused(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	setFaults(t, sim, url, banksim.Faults{Blackhole: &banksim.Fault{}})
	p := h.purchase(100)
	first := make(chan error, 1)
	go func() {
		_, err := h.c.Purchase(ctxFor(t, 5*time.Second), p)
		first <- err
	}()
	eventually(t, "the first to be in flight", func() bool { return sim.Ledger().Calls(url, "0200") == 1 })
	_, err := h.c.Purchase(ctxFor(t, 5*time.Second), p)
	wantKind(t, err, gateway.KindRejected, "duplicate_stan")
	clearFaults(t, sim)
	if err := <-first; err != nil {
		t.Fatalf("first = %v", err)
	}
}

func TestCloseEndsRequestsInFlight(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	setFaults(t, sim, url, banksim.Faults{Blackhole: &banksim.Fault{}})
	got := make(chan error, 1)
	go func() {
		_, err := h.c.Purchase(ctxFor(t, 5*time.Second), h.purchase(100))
		got <- err
	}()
	eventually(t, "the request to be in flight", func() bool { return sim.Ledger().Calls(url, "0200") == 1 })
	h.close()
	wantKind(t, <-got, gateway.KindUnknown, "")
	_, err := h.c.Purchase(ctxFor(t, 5*time.Second), h.purchase(100))
	wantKind(t, err, gateway.KindNotSent, "")
}

func TestInvalidRequestIsNotSent(t *testing.T) {
	sim, url := startSwitch(t, banksim.Config{})
	h := openReady(t, url, nil)
	p := h.purchase(100)
	p.Currency = "XXX"
	_, err := h.c.Purchase(ctxFor(t, 5*time.Second), p)
	wantKind(t, err, gateway.KindRejected, "invalid_request")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = h.c.Purchase(ctx, h.purchase(100))
	wantKind(t, err, gateway.KindNotSent, "")
	if got := sim.Ledger().Calls(url, "0200"); got != 0 {
		t.Errorf("0200 sent = %d", got)
	}
}

func TestTLS(t *testing.T) {
	cert := selfSigned(t)
	sim := banksim.New(banksim.Config{Now: func() time.Time { return day0 }})
	t.Cleanup(func() { sim.Close() })
	url, err := sim.ListenISO8583TLS("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	h := openReady(t, url, func(c *iso8583.Config) { c.TLS = &tls.Config{RootCAs: pool} })
	ans, err := h.c.Purchase(ctxFor(t, 5*time.Second), h.purchase(100))
	wantApproved(t, ans, err)

	// A certificate the client does not trust: never signed on.
	bad := open(t, url, nil)
	eventually(t, "a failed TLS handshake", func() bool { return bad.c.Stats().ConnectFailures > 0 })
	if bad.c.Ready() {
		t.Error("signed on over an untrusted certificate")
	}
}

func TestNewClientChecksItsConfig(t *testing.T) {
	good := iso8583.Config{URL: "tcp://127.0.0.1:9301", Terminal: terminal, STANs: &iso8583.MemorySTANs{}}
	for _, tt := range []struct {
		name   string
		change func(*iso8583.Config)
	}{
		{"HTTPURL", func(c *iso8583.Config) { c.URL = "http://127.0.0.1:9301" }},
		{"NoPort", func(c *iso8583.Config) { c.URL = "tcp://127.0.0.1" }},
		{"Path", func(c *iso8583.Config) { c.URL = "tcp://127.0.0.1:1/x" }},
		{"NoTerminal", func(c *iso8583.Config) { c.Terminal.TerminalID = "" }},
		{"LongMerchant", func(c *iso8583.Config) { c.Terminal.MerchantID = "1234567890123456" }},
		{"NoSTANs", func(c *iso8583.Config) { c.STANs = nil }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good
			tt.change(&cfg)
			if _, err := iso8583.NewClient(cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	if _, err := iso8583.NewClient(good); err != nil {
		t.Fatal(err)
	}
}

// selfSigned makes a certificate for 127.0.0.1.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "switch"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}
