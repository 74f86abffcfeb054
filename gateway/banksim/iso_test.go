package banksim_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"storepay/gateway"
	"storepay/gateway/banksim"
	"storepay/gateway/iso8583"
)

// The ISO 8583 tests speak the profile on the wire with a small raw
// client (isoPeer): frames built from the iso8583 package's typed
// messages, written to a plain TCP socket.

var (
	isoTerminal = iso8583.Terminal{TerminalID: "SP042001", MerchantID: "store-042", Location: time.UTC}
	isoCard     = gateway.Card{PAN: goodPAN, ExpMonth: 12, ExpYear: 2030}
	isoSentAt   = time.Date(2026, 11, 21, 10, 15, 0, 0, time.UTC)
)

// startISO returns a Sim with one ISO 8583 listener, closed at the end of
// the test.
func startISO(t *testing.T, cfg banksim.Config) (*banksim.Sim, string) {
	t.Helper()
	if cfg.APIKey == "" {
		cfg.APIKey = apiKey
	}
	if cfg.Now == nil {
		cfg.Now = newClock(day0).Now
	}
	sim := banksim.New(cfg)
	t.Cleanup(func() {
		if err := sim.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	url, err := sim.ListenISO8583("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return sim, url
}

// isoPeer is one raw connection to the switch.
type isoPeer struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
	stan iso8583.STAN
	mu   sync.Mutex // serializes writes
}

func dialISO(t *testing.T, url string) *isoPeer {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "tcp://"), 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { conn.Close() })
	return &isoPeer{t: t, conn: conn, r: bufio.NewReader(conn)}
}

func (p *isoPeer) nextSTAN() iso8583.STAN {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stan++
	return p.stan
}

// trace is a fresh STAN with the RRN made from it.
func (p *isoPeer) trace() iso8583.Trace {
	s := p.nextSTAN()
	return iso8583.Trace{STAN: s, RRN: iso8583.MakeRRN(isoSentAt, s), Time: isoSentAt.Add(time.Duration(s) * time.Second)}
}

func (p *isoPeer) send(f iso8583.Fields, err error) {
	p.t.Helper()
	if err != nil {
		p.t.Fatalf("build: %v", err)
	}
	packed, err := f.Pack()
	if err != nil {
		p.t.Fatalf("pack: %v", err)
	}
	frame, err := iso8583.Frame(packed)
	if err != nil {
		p.t.Fatal(err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, err := p.conn.Write(frame); err != nil {
		p.t.Fatalf("write: %v", err)
	}
}

// recv reads one answer; err is set when the connection ended or
// nothing came within d.
func (p *isoPeer) recvWithin(d time.Duration) (iso8583.Fields, error) {
	_ = p.conn.SetReadDeadline(time.Now().Add(d))
	raw, err := iso8583.ReadFrame(p.r)
	if err != nil {
		return iso8583.Fields{}, err
	}
	return iso8583.Unpack(raw)
}

func (p *isoPeer) recv() iso8583.Fields {
	p.t.Helper()
	f, err := p.recvWithin(5 * time.Second)
	if err != nil {
		p.t.Fatalf("read answer: %v", err)
	}
	return f
}

// call sends a request and reads its answer, checking that it answers it.
func (p *isoPeer) call(f iso8583.Fields, err error) iso8583.Fields {
	p.t.Helper()
	p.send(f, err)
	ans := p.recv()
	if err := iso8583.CheckAnswer(f, ans); err != nil {
		p.t.Fatalf("answer %v to %v: %v", ans, f, err)
	}
	return ans
}

func (p *isoPeer) signOn() {
	p.t.Helper()
	ans := p.call(iso8583.NetworkFields(isoTerminal, iso8583.NetworkSignOn, p.nextSTAN(), isoSentAt))
	if ans.ResponseCode != "00" || ans.MTI != "0810" {
		p.t.Fatalf("sign-on answered %v", ans)
	}
}

func signedOn(t *testing.T, url string) *isoPeer {
	t.Helper()
	p := dialISO(t, url)
	p.signOn()
	return p
}

func wantCode(t *testing.T, ans iso8583.Fields, code string) {
	t.Helper()
	if ans.ResponseCode != code {
		t.Fatalf("response code = %s, want %s (%v)", ans.ResponseCode, code, ans)
	}
}

func purchase(tr iso8583.Trace, pan string, amount int64) iso8583.Purchase {
	c := isoCard
	c.PAN = pan
	return iso8583.Purchase{Trace: tr, Card: c, Amount: amount, Currency: "USD"}
}

func TestISOSignOnComesFirst(t *testing.T) {
	sim, url := startISO(t, banksim.Config{})
	p := dialISO(t, url)
	wantCode(t, p.call(purchase(p.trace(), goodPAN, 100).Fields(isoTerminal)), iso8583.CodeUnavailable)
	wantCode(t, p.call(iso8583.NetworkFields(isoTerminal, iso8583.NetworkEcho, p.nextSTAN(), isoSentAt)), iso8583.CodeUnavailable)
	p.signOn()
	wantCode(t, p.call(iso8583.NetworkFields(isoTerminal, iso8583.NetworkEcho, p.nextSTAN(), isoSentAt)), "00")
	wantCode(t, p.call(purchase(p.trace(), goodPAN, 100).Fields(isoTerminal)), "00")
	if n := len(sim.Ledger().Authorizations); n != 1 {
		t.Errorf("%d authorizations, want 1: the sale before the sign-on did nothing", n)
	}
	if got := sim.Ledger().Calls(url, iso8583.MTINetwork); got != 3 {
		t.Errorf("0800 calls = %d, want 3", got)
	}
}

func TestISOSale(t *testing.T) {
	sim, url := startISO(t, banksim.Config{})
	p := signedOn(t, url)
	tr := p.trace()
	req, err := purchase(tr, goodPAN, 1250).Fields(isoTerminal)
	ans := p.call(req, err)
	wantCode(t, ans, "00")
	if ans.MTI != "0210" || len(ans.AuthCode) != 6 || ans.ProcessingCode != "000000" || ans.Amount != "1250" ||
		ans.TransmissionTime != req.TransmissionTime || ans.RRN != tr.RRN || ans.MerchantID != "" {
		t.Errorf("answer = %v", ans)
	}
	a, ok := sim.Ledger().FindRRN(tr.RRN)
	if !ok || a.Status != "approved" || a.CapturedAmount != 1250 || a.Protocol != banksim.ProtocolISO8583 ||
		a.CaptureRRN != tr.RRN || a.AuthCode != ans.AuthCode || a.TerminalID != "SP042001" || a.CardLast4 != "4242" {
		t.Errorf("ledger = %+v", a)
	}
}

func TestISODeclines(t *testing.T) {
	clk := newClock(day0)
	sim, url := startISO(t, banksim.Config{Now: clk.Now})
	p := signedOn(t, url)
	tests := []struct {
		name string
		pan  string
		exp  int // expiry year
		code string
	}{
		{"DoNotHonor", "4000000000000002", 2030, "05"},
		{"InsufficientFunds", "4000000000009995", 2030, "51"},
		{"ExpiredCard", "4000000000000069", 2030, "54"},
		{"LostOrStolen", "4000000000009979", 2030, "41"},
		{"ExpiredByDate", goodPAN, 2025, "54"},
		{"LuhnFails", "4242424242424241", 2030, "14"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := purchase(p.trace(), tt.pan, 500)
			r.Card.ExpYear = tt.exp
			ans := p.call(r.Fields(isoTerminal))
			wantCode(t, ans, tt.code)
			if ans.AuthCode != "" {
				t.Errorf("a decline with auth code %q", ans.AuthCode)
			}
			if a, ok := sim.Ledger().FindRRN(r.Trace.RRN); ok && a.Status != "declined" {
				t.Errorf("ledger = %+v", a)
			}
		})
	}
}

func TestISOPreAuthorizationAndCompletion(t *testing.T) {
	sim, url := startISO(t, banksim.Config{})
	p := signedOn(t, url)
	auth := iso8583.Authorization{Trace: p.trace(), Card: isoCard, Amount: 1000, Currency: "USD"}
	ans := p.call(auth.Fields(isoTerminal))
	wantCode(t, ans, "00")
	if ans.MTI != "0110" {
		t.Fatalf("MTI %s", ans.MTI)
	}
	complete := func(amount int64, code string, orig iso8583.Original) (iso8583.Completion, iso8583.Fields) {
		c := iso8583.Completion{Trace: p.trace(), Card: isoCard, Amount: amount, Currency: "USD", AuthCode: code, Original: orig}
		return c, p.call(c.Fields(isoTerminal))
	}

	t.Run("Above20PercentIs13AndDoesNothing", func(t *testing.T) {
		_, got := complete(1201, ans.AuthCode, auth.Ref())
		wantCode(t, got, "13")
		if a, _ := sim.Ledger().FindRRN(auth.Trace.RRN); a.CapturedAmount != 0 {
			t.Errorf("captured %d", a.CapturedAmount)
		}
	})
	t.Run("UnknownOriginalIs12", func(t *testing.T) {
		o := auth.Ref()
		o.STAN++
		_, got := complete(1000, ans.AuthCode, o)
		wantCode(t, got, "12")
	})
	t.Run("WrongAuthCodeIs12", func(t *testing.T) {
		_, got := complete(1000, "ZZZZZZ", auth.Ref())
		wantCode(t, got, "12")
	})
	t.Run("Within20Percent", func(t *testing.T) {
		c, got := complete(1200, ans.AuthCode, auth.Ref())
		wantCode(t, got, "00")
		if got.MTI != "0230" || got.AuthCode != ans.AuthCode {
			t.Errorf("answer = %v", got)
		}
		a, _ := sim.Ledger().FindRRN(auth.Trace.RRN)
		if a.CapturedAmount != 1200 || a.CaptureRRN != c.Trace.RRN {
			t.Errorf("ledger = %+v", a)
		}
	})
	t.Run("SecondCompletionIs12", func(t *testing.T) {
		_, got := complete(100, ans.AuthCode, auth.Ref())
		wantCode(t, got, "12")
	})
}

func TestISORefundsAreBoundedByWhatIsLeft(t *testing.T) {
	sim, url := startISO(t, banksim.Config{})
	p := signedOn(t, url)
	sale := purchase(p.trace(), goodPAN, 1000)
	wantCode(t, p.call(sale.Fields(isoTerminal)), "00")
	refund := func(amount int64, orig iso8583.Original) (iso8583.Refund, iso8583.Fields) {
		r := iso8583.Refund{Trace: p.trace(), Card: isoCard, Amount: amount, Currency: "USD", Original: orig}
		return r, p.call(r.Fields(isoTerminal))
	}
	r1, ans := refund(600, sale.Ref())
	wantCode(t, ans, "00")
	if ans.ProcessingCode != "200000" || ans.MTI != "0210" {
		t.Errorf("answer = %v", ans)
	}
	_, ans = refund(401, sale.Ref())
	wantCode(t, ans, "13")
	_, ans = refund(400, sale.Ref())
	wantCode(t, ans, "00")
	unknown := sale.Ref()
	unknown.TransmissionTime = "0101000000"
	_, ans = refund(1, unknown)
	wantCode(t, ans, "12")

	l := sim.Ledger()
	if len(l.Refunds) != 2 || l.Refunds[0].RRN != r1.Trace.RRN || l.Refunds[0].Amount != 600 {
		t.Errorf("refunds = %+v", l.Refunds)
	}
	if a, _ := l.FindRRN(sale.Trace.RRN); a.RefundedAmount != 1000 {
		t.Errorf("refunded %d", a.RefundedAmount)
	}
}

func TestISOReversals(t *testing.T) {
	sim, url := startISO(t, banksim.Config{})
	p := signedOn(t, url)
	reverse := func(orig iso8583.Original, pc string, amount int64) iso8583.Fields {
		r := iso8583.Reversal{Trace: p.trace(), Card: isoCard, Amount: amount, Currency: "USD", ProcessingCode: pc, Reason: iso8583.ReasonNoAnswer, Original: orig}
		ans := p.call(r.Fields(isoTerminal))
		if ans.MTI != "0430" {
			t.Fatalf("MTI %s", ans.MTI)
		}
		return ans
	}

	t.Run("OfASale", func(t *testing.T) {
		sale := purchase(p.trace(), goodPAN, 700)
		wantCode(t, p.call(sale.Fields(isoTerminal)), "00")
		wantCode(t, reverse(sale.Ref(), "", 700), "00")
		if a, _ := sim.Ledger().FindRRN(sale.Trace.RRN); a.Status != "reversed" {
			t.Errorf("status %s", a.Status)
		}
		wantCode(t, reverse(sale.Ref(), "", 700), "00") // again: nothing left to undo
	})
	t.Run("OfAnOperationNeverReceivedChangesNothing", func(t *testing.T) {
		before := sim.Ledger()
		never := purchase(p.trace(), goodPAN, 700) // built, never sent
		wantCode(t, reverse(never.Ref(), "", 700), "00")
		after := sim.Ledger()
		if len(after.Authorizations) != len(before.Authorizations) || len(after.Refunds) != len(before.Refunds) {
			t.Errorf("the ledger changed")
		}
		for i := range before.Authorizations {
			if before.Authorizations[i] != after.Authorizations[i] {
				t.Errorf("authorization %d changed", i)
			}
		}
	})
	t.Run("OfACompletionUncaptures", func(t *testing.T) {
		auth := iso8583.Authorization{Trace: p.trace(), Card: isoCard, Amount: 500, Currency: "USD"}
		ans := p.call(auth.Fields(isoTerminal))
		c := iso8583.Completion{Trace: p.trace(), Card: isoCard, Amount: 550, Currency: "USD", AuthCode: ans.AuthCode, Original: auth.Ref()}
		wantCode(t, p.call(c.Fields(isoTerminal)), "00")
		wantCode(t, reverse(c.Ref(), "", 550), "00")
		a, _ := sim.Ledger().FindRRN(auth.Trace.RRN)
		if a.Status != "approved" || a.CapturedAmount != 0 {
			t.Errorf("ledger = %+v", a)
		}
	})
	t.Run("OfARefund", func(t *testing.T) {
		sale := purchase(p.trace(), goodPAN, 900)
		wantCode(t, p.call(sale.Fields(isoTerminal)), "00")
		r := iso8583.Refund{Trace: p.trace(), Card: isoCard, Amount: 300, Currency: "USD", Original: sale.Ref()}
		wantCode(t, p.call(r.Fields(isoTerminal)), "00")
		wantCode(t, reverse(r.Ref(), iso8583.ProcessingRefund, 300), "00")
		l := sim.Ledger()
		if a, _ := l.FindRRN(sale.Trace.RRN); a.RefundedAmount != 0 {
			t.Errorf("refunded %d after the reversal", a.RefundedAmount)
		}
		if got := l.Refunds[len(l.Refunds)-1]; got.ReversedAt.IsZero() {
			t.Errorf("refund not reversed: %+v", got)
		}
	})
	t.Run("OfARefundedSaleIs12", func(t *testing.T) {
		sale := purchase(p.trace(), goodPAN, 900)
		wantCode(t, p.call(sale.Fields(isoTerminal)), "00")
		r := iso8583.Refund{Trace: p.trace(), Card: isoCard, Amount: 100, Currency: "USD", Original: sale.Ref()}
		wantCode(t, p.call(r.Fields(isoTerminal)), "00")
		wantCode(t, reverse(sale.Ref(), "", 900), "12")
	})
}

// The duplicate rule: an RRN is processed at most once per terminal;
// a repeat gets the first answer's 38 and 39.
func TestISODuplicateRRN(t *testing.T) {
	sim, url := startISO(t, banksim.Config{})
	p := signedOn(t, url)

	t.Run("SaleSentTwice", func(t *testing.T) {
		tr := p.trace()
		first := p.call(purchase(tr, goodPAN, 1500).Fields(isoTerminal))
		second := p.call(purchase(tr, goodPAN, 1500).Fields(isoTerminal))
		wantCode(t, second, "00")
		if second.AuthCode != first.AuthCode {
			t.Errorf("auth codes %q and %q", first.AuthCode, second.AuthCode)
		}
		n := 0
		for _, a := range sim.Ledger().Authorizations {
			if a.RRN == tr.RRN {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d authorizations under the RRN, want 1", n)
		}
	})
	t.Run("ADeclineStaysADecline", func(t *testing.T) {
		tr := p.trace()
		wantCode(t, p.call(purchase(tr, "4000000000009995", 1500).Fields(isoTerminal)), "51")
		wantCode(t, p.call(purchase(tr, goodPAN, 1500).Fields(isoTerminal)), "51")
	})
	t.Run("AdviceRepeat0221", func(t *testing.T) {
		adv := iso8583.OfflineAdvice{Trace: p.trace(), Card: isoCard, Amount: 800, Currency: "USD"}
		first := p.call(adv.Fields(isoTerminal))
		adv.Repeat = true
		repeat := p.call(adv.Fields(isoTerminal))
		wantCode(t, repeat, "00")
		if repeat.MTI != "0230" || repeat.AuthCode != first.AuthCode {
			t.Errorf("repeat = %v, first %v", repeat, first)
		}
		a, _ := sim.Ledger().FindRRN(adv.Trace.RRN)
		if !a.Stored || a.CapturedAmount != 800 {
			t.Errorf("ledger = %+v", a)
		}
	})
	t.Run("ReversalRepeat0421", func(t *testing.T) {
		sale := purchase(p.trace(), goodPAN, 640)
		wantCode(t, p.call(sale.Fields(isoTerminal)), "00")
		rev := iso8583.Reversal{Trace: p.trace(), Card: isoCard, Amount: 640, Currency: "USD", Reason: iso8583.ReasonCustomerCancellation, Original: sale.Ref()}
		wantCode(t, p.call(rev.Fields(isoTerminal)), "00")
		rev.Repeat = true
		wantCode(t, p.call(rev.Fields(isoTerminal)), "00")
	})
	t.Run("PerTerminal", func(t *testing.T) {
		tr := p.trace()
		wantCode(t, p.call(purchase(tr, goodPAN, 100).Fields(isoTerminal)), "00")
		other := isoTerminal
		other.TerminalID = "SP042002"
		q := dialISO(t, url)
		ans := q.call(iso8583.NetworkFields(other, iso8583.NetworkSignOn, 1, isoSentAt))
		wantCode(t, ans, "00")
		wantCode(t, q.call(purchase(tr, goodPAN, 100).Fields(other)), "00")
		n := 0
		for _, a := range sim.Ledger().Authorizations {
			if a.RRN == tr.RRN {
				n++
			}
		}
		if n != 2 {
			t.Errorf("%d authorizations, want one per terminal", n)
		}
	})
}

func TestISOSettlementUsesTheRRN(t *testing.T) {
	clk := newClock(day0)
	sim, url := startISO(t, banksim.Config{Now: clk.Now})
	p := signedOn(t, url)
	sale := purchase(p.trace(), goodPAN, 1000)
	wantCode(t, p.call(sale.Fields(isoTerminal)), "00")
	auth := iso8583.Authorization{Trace: p.trace(), Card: isoCard, Amount: 500, Currency: "USD"}
	ans := p.call(auth.Fields(isoTerminal))
	comp := iso8583.Completion{Trace: p.trace(), Card: isoCard, Amount: 600, Currency: "USD", AuthCode: ans.AuthCode, Original: auth.Ref()}
	wantCode(t, p.call(comp.Fields(isoTerminal)), "00")
	refund := iso8583.Refund{Trace: p.trace(), Card: isoCard, Amount: 250, Currency: "USD", Original: sale.Ref()}
	wantCode(t, p.call(refund.Fields(isoTerminal)), "00")
	reversed := iso8583.Refund{Trace: p.trace(), Card: isoCard, Amount: 50, Currency: "USD", Original: comp.Ref()}
	wantCode(t, p.call(reversed.Fields(isoTerminal)), "00")
	rev := iso8583.Reversal{Trace: p.trace(), Card: isoCard, Amount: 50, Currency: "USD", ProcessingCode: iso8583.ProcessingRefund, Reason: "17", Original: reversed.Ref()}
	wantCode(t, p.call(rev.Fields(isoTerminal)), "00")

	clk.Set(day0.Add(24 * time.Hour))
	report, ok := sim.Settlement("", "2026-11-21")
	if !ok {
		t.Fatal("day not closed")
	}
	rows, err := csv.NewReader(strings.NewReader(string(report))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{} // psp_reference → type gross
	for _, r := range rows[1:] {
		if r[3] != "" {
			t.Errorf("merchant_reference %q, want empty for ISO rows", r[3])
		}
		got[r[2]] = r[4] + " " + r[7]
	}
	want := map[string]string{
		sale.Trace.RRN:   "Settled 1000",
		comp.Trace.RRN:   "Settled 600",
		refund.Trace.RRN: "Refunded -250",
	}
	if len(got) != len(want) {
		t.Errorf("rows = %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("row %s = %q, want %q", k, got[k], v)
		}
	}
}

func TestISOMerchantCheck(t *testing.T) {
	_, url := startISO(t, banksim.Config{MerchantID: "store-042"})
	p := signedOn(t, url)
	other := isoTerminal
	other.MerchantID = "store-999"
	wantCode(t, p.call(purchase(p.trace(), goodPAN, 100).Fields(other)), "03")
	wantCode(t, p.call(purchase(p.trace(), goodPAN, 100).Fields(isoTerminal)), "00")
}

func TestISOFaultAnswers(t *testing.T) {
	tests := []struct {
		name   string
		faults banksim.Faults
		code   string
		done   bool // the work was done
	}{
		{"NotProcessedIs91", banksim.Faults{NotProcessed: &banksim.Fault{}}, "91", false},
		{"ErrorIs96", banksim.Faults{Error: &banksim.Fault{}}, "96", false},
		{"UnauthorizedIs03", banksim.Faults{Unauthorized: &banksim.Fault{}}, "03", false},
		{"ErrorAfterApplyIs96AfterTheWork", banksim.Faults{ErrorAfterApply: &banksim.Fault{}}, "96", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sim, url := startISO(t, banksim.Config{})
			p := signedOn(t, url)
			setFaults(t, sim, url, tt.faults)
			sale := purchase(p.trace(), goodPAN, 100)
			wantCode(t, p.call(sale.Fields(isoTerminal)), tt.code)
			if _, ok := sim.Ledger().FindRRN(sale.Trace.RRN); ok != tt.done {
				t.Errorf("work done = %v, want %v", ok, tt.done)
			}
			clearFaults(t, sim)
			// The repeat gets the real answer once, and is done once.
			wantCode(t, p.call(sale.Fields(isoTerminal)), "00")
			if n := len(sim.Ledger().Authorizations); n != 1 {
				t.Errorf("%d authorizations, want 1", n)
			}
		})
	}
}

func TestISOFaultLatency(t *testing.T) {
	sim, url := startISO(t, banksim.Config{})
	p := signedOn(t, url)
	setFaults(t, sim, "", banksim.Faults{Latency: &banksim.Latency{Fixed: 50 * time.Millisecond}})
	begin := time.Now()
	wantCode(t, p.call(purchase(p.trace(), goodPAN, 100).Fields(isoTerminal)), "00")
	if took := time.Since(begin); took < 50*time.Millisecond {
		t.Errorf("answer took %v", took)
	}
	// Lifting a long latency releases the message at once.
	setFaults(t, sim, "", banksim.Faults{Latency: &banksim.Latency{Fixed: time.Hour}})
	sale := purchase(p.trace(), goodPAN, 100)
	p.send(sale.Fields(isoTerminal))
	if _, err := p.recvWithin(50 * time.Millisecond); !isTimeout(err) {
		t.Fatalf("answer during the latency: %v", err)
	}
	clearFaults(t, sim)
	wantCode(t, p.recv(), "00")
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestISOFaultBlackhole(t *testing.T) {
	sim, url := startISO(t, banksim.Config{})
	p := signedOn(t, url)
	setFaults(t, sim, url, banksim.Faults{Blackhole: &banksim.Fault{}})
	sale := purchase(p.trace(), goodPAN, 100)
	p.send(sale.Fields(isoTerminal))
	if _, err := p.recvWithin(100 * time.Millisecond); !isTimeout(err) {
		t.Fatalf("answer from a black hole: %v", err)
	}
	if len(sim.Ledger().Authorizations) != 0 {
		t.Fatal("a held message did work")
	}
	clearFaults(t, sim)
	wantCode(t, p.recv(), "00")
}

func TestISOFaultDropAfterApply(t *testing.T) {
	sim, url := startISO(t, banksim.Config{})
	p := signedOn(t, url)
	setFaults(t, sim, url, banksim.Faults{DropAfterApply: &banksim.Fault{}})
	sale := purchase(p.trace(), goodPAN, 100)
	p.send(sale.Fields(isoTerminal))
	if _, err := p.recvWithin(5 * time.Second); err == nil || isTimeout(err) {
		t.Fatalf("read = %v, want the connection reset", err)
	}
	if a, ok := sim.Ledger().FindRRN(sale.Trace.RRN); !ok || a.Status != "approved" {
		t.Fatalf("work not done: %+v", a)
	}
	clearFaults(t, sim)
	q := signedOn(t, url)
	ans := q.call(sale.Fields(isoTerminal)) // same RRN on a new connection
	wantCode(t, ans, "00")
	if n := len(sim.Ledger().Authorizations); n != 1 {
		t.Errorf("%d authorizations, want 1", n)
	}
}

func TestISOFaultRefuse(t *testing.T) {
	sim, url := startISO(t, banksim.Config{})
	p := signedOn(t, url)
	setFaults(t, sim, url, banksim.Faults{Refuse: true})
	if _, err := p.recvWithin(5 * time.Second); err == nil || isTimeout(err) {
		t.Fatalf("open connection survived Refuse: %v", err)
	}
	if c, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "tcp://"), time.Second); err == nil {
		c.Close()
		t.Fatal("dial succeeded while refusing")
	}
	clearFaults(t, sim)
	q := signedOn(t, url)
	wantCode(t, q.call(purchase(q.trace(), goodPAN, 100).Fields(isoTerminal)), "00")
}

func TestISOBadInputDropsTheConnection(t *testing.T) {
	sim, url := startISO(t, banksim.Config{})
	tests := []struct {
		name string
		raw  []byte
	}{
		{"Garbage", append(binary.BigEndian.AppendUint16(nil, 7), "garbage"...)},
		{"ZeroLength", []byte{0, 0}},
		{"Oversize", []byte{0xff, 0xff}},
		{"Answer", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := signedOn(t, url)
			if tt.raw == nil {
				f := iso8583.Fields{MTI: "0210", STAN: "000001", TerminalID: "SP042001", ResponseCode: "00"}
				p.send(f, nil)
			} else if _, err := p.conn.Write(tt.raw); err != nil {
				t.Fatal(err)
			}
			if _, err := p.recvWithin(5 * time.Second); err == nil || isTimeout(err) {
				t.Fatalf("read = %v, want the connection closed", err)
			}
		})
	}
	// The switch still serves.
	p := signedOn(t, url)
	wantCode(t, p.call(purchase(p.trace(), goodPAN, 100).Fields(isoTerminal)), "00")
	if got := sim.Ledger().Calls(url, banksim.EndpointOther); got != 3 {
		t.Errorf("other calls = %d, want 3 (garbage, zero length and oversize)", got)
	}
}

func TestISOOverTLS(t *testing.T) {
	cert := selfSigned(t)
	sim := banksim.New(banksim.Config{APIKey: apiKey, Now: newClock(day0).Now})
	t.Cleanup(func() { sim.Close() })
	url, err := sim.ListenISO8583TLS("127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(url, "tls://") {
		t.Fatalf("url %s", url)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	conn, err := tls.Dial("tcp", strings.TrimPrefix(url, "tls://"), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	p := &isoPeer{t: t, conn: conn, r: bufio.NewReader(conn)}
	p.signOn()
	wantCode(t, p.call(purchase(p.trace(), goodPAN, 100).Fields(isoTerminal)), "00")
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
		Subject:      pkix.Name{CommonName: "banksim"},
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
