package acquirer_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"storepay/gateway"
	"storepay/gateway/acquirer"
	"storepay/gateway/banksim"
)

const (
	apiKey  = "sk_test_acquirer"
	testPAN = "4242424242424242"
	badPAN  = "4242424242424241" // fails the Luhn check
)

var today = time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)

// fixture is a simulated bank with one URL and a client of it.
type fixture struct {
	sim    *banksim.Sim
	url    string
	client *acquirer.Client
}

func newFixture(t *testing.T, now func() time.Time) *fixture {
	t.Helper()
	if now == nil {
		now = func() time.Time { return today }
	}
	sim := banksim.New(banksim.Config{APIKey: apiKey, Now: now})
	t.Cleanup(func() { _ = sim.Close() })
	url, err := sim.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{sim: sim, url: url, client: newClient(t, url, apiKey)}
}

func newClient(t *testing.T, url, key string) *acquirer.Client {
	hc := acquirer.NewHTTPClient()
	t.Cleanup(hc.CloseIdleConnections)
	return acquirer.New(acquirer.Config{BaseURL: url, APIKey: key, MerchantID: "store-042", Gateway: "banksim", HTTPClient: hc})
}

func (f *fixture) faults(t *testing.T, faults banksim.Faults) {
	t.Helper()
	if err := f.sim.SetFaults("", faults); err != nil {
		t.Fatal(err)
	}
}

func sale(ref string, amount int64) gateway.AuthRequest {
	return gateway.AuthRequest{
		Key: "idem-" + ref, TerminalID: "lane-3", Reference: ref, Amount: amount, Currency: "USD", Capture: true,
		Card: gateway.Card{PAN: testPAN, ExpMonth: 12, ExpYear: 2030},
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

// wantKind checks that err is a *gateway.Error of kind, and that it holds
// no card number.
func wantKind(t *testing.T, err error, kind gateway.Kind) *gateway.Error {
	t.Helper()
	e := gateway.AsError(err)
	if e == nil {
		t.Fatalf("err = %v (%T), want a *gateway.Error", err, err)
	}
	if e.Kind != kind {
		t.Fatalf("kind = %v (%v), want %v", e.Kind, err, kind)
	}
	if e.Gateway != "banksim" || e.URL == "" {
		t.Errorf("error names gateway %q, URL %q", e.Gateway, e.URL)
	}
	noPAN(t, err)
	return e
}

func noPAN(t *testing.T, err error) {
	t.Helper()
	for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err), fmt.Sprintf("%#v", gateway.AsError(err))} {
		if strings.Contains(s, testPAN) || strings.Contains(s, badPAN) {
			t.Errorf("error shows a card number: %s", s)
		}
	}
}

func TestProtocolRoundTrip(t *testing.T) {
	var clk atomic.Int64 // the bank's clock, Unix seconds
	clk.Store(today.Unix())
	f := newFixture(t, func() time.Time { return time.Unix(clk.Load(), 0) })
	c := f.client
	if c.URL() != f.url {
		t.Errorf("URL = %q, want %q", c.URL(), f.url)
	}
	if err := c.Health(ctx(t)); err != nil {
		t.Fatalf("Health: %v", err)
	}

	auth, err := c.Authorize(ctx(t), sale("pay_1", 1250))
	if err != nil {
		t.Fatal(err)
	}
	if auth.Status != gateway.StatusApproved || auth.CapturedAmount != 1250 || auth.AuthCode == "" || auth.Reference != "pay_1" {
		t.Errorf("sale = %+v", auth)
	}
	if a, _ := f.sim.Ledger().Find(auth.ID); a.MerchantID != "store-042" {
		t.Errorf("merchant_id = %q, want the configured store-042", a.MerchantID)
	}

	declined := sale("pay_2", 500)
	declined.Card.PAN = "4000000000000002"
	d, err := c.Authorize(ctx(t), declined)
	if err != nil || d.Status != gateway.StatusDeclined || d.DeclineCode != "do_not_honor" {
		t.Errorf("declined = %+v, %v", d, err)
	}

	for _, by := range []gateway.Lookup{{Reference: "pay_1"}, {IdempotencyKey: "idem-pay_1"}} {
		list, err := c.Find(ctx(t), by)
		if err != nil || len(list) != 1 || list[0] != auth {
			t.Errorf("Find(%+v) = %+v, %v", by, list, err)
		}
	}
	if list, err := c.Find(ctx(t), gateway.Lookup{Reference: "pay_never"}); err != nil || list == nil || len(list) != 0 {
		t.Errorf("Find(never) = %#v, %v, want an empty list", list, err)
	}
	_, err = c.Find(ctx(t), gateway.Lookup{})
	if e := wantKind(t, err, gateway.KindRejected); e.Code != "invalid_request" {
		t.Errorf("empty lookup code = %q", e.Code)
	}

	pre := sale("pay_3", 1000)
	pre.Capture = false
	preAuth, err := c.Authorize(ctx(t), pre)
	if err != nil {
		t.Fatal(err)
	}
	captured, err := c.Capture(ctx(t), gateway.CaptureRequest{Key: "cap-3", AuthorizationID: preAuth.ID, Amount: 1150})
	if err != nil || captured.CapturedAmount != 1150 {
		t.Errorf("Capture = %+v, %v", captured, err)
	}
	_, err = c.Capture(ctx(t), gateway.CaptureRequest{Key: "cap-3b", AuthorizationID: preAuth.ID, Amount: 1150})
	if e := wantKind(t, err, gateway.KindRejected); e.Code != "already_captured" || e.Status != http.StatusUnprocessableEntity {
		t.Errorf("second capture = %v", err)
	}

	refund, err := c.Refund(ctx(t), gateway.RefundRequest{Key: "rfd-1", AuthorizationID: auth.ID, Amount: 250, Reference: "ref_1"})
	if err != nil || refund.Status != "refunded" || refund.Amount != 250 || refund.AuthorizationID != auth.ID {
		t.Errorf("Refund = %+v, %v", refund, err)
	}
	_, err = c.Refund(ctx(t), gateway.RefundRequest{Key: "rfd-2", AuthorizationID: auth.ID, Amount: 1001})
	if e := wantKind(t, err, gateway.KindRejected); e.Code != "refund_exceeds_capture" {
		t.Errorf("over-refund = %v", err)
	}

	toVoid, err := c.Authorize(ctx(t), sale("pay_4", 300))
	if err != nil {
		t.Fatal(err)
	}
	list, err := c.Reverse(ctx(t), gateway.ReverseRequest{Key: "rev-4", AuthorizationID: toVoid.ID})
	if err != nil || len(list) != 1 || list[0].Status != gateway.StatusReversed {
		t.Errorf("Reverse by id = %+v, %v", list, err)
	}
	if _, err := c.Authorize(ctx(t), sale("pay_5", 300)); err != nil {
		t.Fatal(err)
	}
	list, err = c.Reverse(ctx(t), gateway.ReverseRequest{Key: "rev-5", Reference: "pay_5"})
	if err != nil || len(list) != 1 || list[0].Status != gateway.StatusReversed || list[0].Reference != "pay_5" {
		t.Errorf("Reverse by reference = %+v, %v", list, err)
	}

	_, err = c.Settlement(ctx(t), "2026-11-21")
	if e := wantKind(t, err, gateway.KindRejected); e.Status != http.StatusNotFound {
		t.Errorf("open day status = %d", e.Status)
	}
	clk.Store(today.Add(24 * time.Hour).Unix())
	report, err := c.Settlement(ctx(t), "2026-11-21")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(report), "batch_number,") || !strings.Contains(string(report), auth.ID) {
		t.Errorf("report = %s", report)
	}
}

// TestClassification has one case per row of the protocol's outcome table.
func TestClassification(t *testing.T) {
	t.Run("RefusedIsNotSent", func(t *testing.T) {
		f := newFixture(t, nil)
		f.faults(t, banksim.Faults{Refuse: true})
		_, err := f.client.Authorize(ctx(t), sale("pay_refused", 100))
		wantKind(t, err, gateway.KindNotSent)
		if !gateway.NothingDone(err) {
			t.Error("NothingDone = false")
		}
	})
	t.Run("TLSHandshakeFailureIsNotSent", func(t *testing.T) {
		f := newFixture(t, nil)
		c := newClient(t, strings.Replace(f.url, "http://", "https://", 1), apiKey)
		_, err := c.Authorize(ctx(t), sale("pay_tls", 100))
		wantKind(t, err, gateway.KindNotSent)
		if n := len(f.sim.Ledger().Authorizations); n != 0 {
			t.Errorf("authorizations = %d", n)
		}
	})
	t.Run("CancelledBeforeSendingIsNotSent", func(t *testing.T) {
		f := newFixture(t, nil)
		c, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := f.client.Authorize(c, sale("pay_cancelled", 100))
		wantKind(t, err, gateway.KindNotSent)
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want it to wrap context.Canceled", err)
		}
	})
	t.Run("DeadlineWaitingForConnectionIsNotSent", func(t *testing.T) {
		f := newFixture(t, nil)
		hc := acquirer.NewHTTPClient()
		hc.Transport.(*http.Transport).MaxConnsPerHost = 1
		t.Cleanup(hc.CloseIdleConnections)
		c := acquirer.New(acquirer.Config{BaseURL: f.url, APIKey: apiKey, MerchantID: "store-042", Gateway: "banksim", HTTPClient: hc})
		f.faults(t, banksim.Faults{Blackhole: &banksim.Fault{Next: 1}})
		first := make(chan error, 1)
		go func() {
			_, err := c.Authorize(ctx(t), sale("pay_first", 100))
			first <- err
		}()
		eventually(t, func() bool { return f.sim.Ledger().Calls(f.url, banksim.EndpointAuthorize) == 1 })

		// The only connection is taken: the second request never leaves.
		short, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err := c.Authorize(short, sale("pay_second", 100))
		wantKind(t, err, gateway.KindNotSent)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want a deadline", err)
		}

		if err := f.sim.ClearFaults(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-first:
			if err != nil {
				t.Errorf("first request after the blackhole lifted: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("first request still held")
		}
	})
	t.Run("BlackholeTimeoutIsUnknown", func(t *testing.T) {
		f := newFixture(t, nil)
		f.faults(t, banksim.Faults{Blackhole: &banksim.Fault{}})
		short, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_, err := f.client.Authorize(short, sale("pay_blackhole", 100))
		wantKind(t, err, gateway.KindUnknown)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err = %v, want a deadline", err)
		}
		if gateway.NothingDone(err) {
			t.Error("NothingDone = true for a request the bank may have seen")
		}
	})
	t.Run("DropAfterApplyIsUnknownThenRetryReplays", func(t *testing.T) {
		f := newFixture(t, nil)
		f.faults(t, banksim.Faults{DropAfterApply: &banksim.Fault{Next: 1}})
		req := sale("pay_drop", 100)
		_, err := f.client.Authorize(ctx(t), req)
		wantKind(t, err, gateway.KindUnknown)

		auth, err := f.client.Authorize(ctx(t), req) // same key
		if err != nil {
			t.Fatal(err)
		}
		l := f.sim.Ledger()
		if len(l.Authorizations) != 1 || auth.ID != l.Authorizations[0].ID || auth.Status != gateway.StatusApproved {
			t.Errorf("retry = %+v, ledger %+v", auth, l.Authorizations)
		}
		if n := l.ChargesFor("pay_drop"); n != 1 {
			t.Errorf("charges = %d, want 1", n)
		}
		if n := l.Calls(f.url, banksim.EndpointAuthorize); n != 2 {
			t.Errorf("authorize calls = %d, want 2", n)
		}
	})
	t.Run("ServerErrorIsUnknown", func(t *testing.T) {
		f := newFixture(t, nil)
		f.faults(t, banksim.Faults{Error: &banksim.Fault{}})
		_, err := f.client.Authorize(ctx(t), sale("pay_500", 100))
		if e := wantKind(t, err, gateway.KindUnknown); e.Status != http.StatusInternalServerError || e.Code != "internal_error" {
			t.Errorf("error = %+v", e)
		}
	})
	t.Run("NotProcessed", func(t *testing.T) {
		f := newFixture(t, nil)
		f.faults(t, banksim.Faults{NotProcessed: &banksim.Fault{}})
		_, err := f.client.Authorize(ctx(t), sale("pay_503", 100))
		if e := wantKind(t, err, gateway.KindNotProcessed); e.Status != http.StatusServiceUnavailable || e.Code != "not_processed" {
			t.Errorf("error = %+v", e)
		}
		if err := f.client.Health(ctx(t)); gateway.AsError(err) == nil || gateway.AsError(err).Kind != gateway.KindNotProcessed {
			t.Errorf("Health = %v", err)
		}
	})
	t.Run("RateLimitedWithRetryAfter", func(t *testing.T) {
		f := newFixture(t, nil)
		f.faults(t, banksim.Faults{RateLimit: &banksim.RateLimit{PerSecond: 0, RetryAfter: 7 * time.Second}})
		_, err := f.client.Authorize(ctx(t), sale("pay_429", 100))
		if e := wantKind(t, err, gateway.KindRateLimited); e.RetryAfter != 7*time.Second || e.Status != http.StatusTooManyRequests {
			t.Errorf("error = %+v", e)
		}
	})
	t.Run("Unauthorized", func(t *testing.T) {
		f := newFixture(t, nil)
		_, err := newClient(t, f.url, "sk_wrong").Authorize(ctx(t), sale("pay_401", 100))
		wantKind(t, err, gateway.KindUnauthorized)
		f.faults(t, banksim.Faults{Unauthorized: &banksim.Fault{}})
		wantKind(t, f.client.Health(ctx(t)), gateway.KindUnauthorized)
	})
	t.Run("InvalidCardIsRejected", func(t *testing.T) {
		f := newFixture(t, nil)
		req := sale("pay_422", 100)
		req.Card.PAN = badPAN
		_, err := f.client.Authorize(ctx(t), req)
		if e := wantKind(t, err, gateway.KindRejected); e.Code != "invalid_card" || e.Status != http.StatusUnprocessableEntity {
			t.Errorf("error = %+v", e)
		}
	})
	t.Run("KeyReuseIsRejected", func(t *testing.T) {
		f := newFixture(t, nil)
		req := sale("pay_reuse", 100)
		if _, err := f.client.Authorize(ctx(t), req); err != nil {
			t.Fatal(err)
		}
		req.Amount = 101
		_, err := f.client.Authorize(ctx(t), req)
		if e := wantKind(t, err, gateway.KindRejected); e.Code != "idempotency_key_reuse" {
			t.Errorf("error = %+v", e)
		}
	})
	t.Run("KeyInUseIsUnknown", func(t *testing.T) {
		f := newFixture(t, nil)
		f.faults(t, banksim.Faults{Latency: &banksim.Latency{Fixed: time.Hour, Fault: banksim.Fault{Next: 1}}})
		req := sale("pay_409", 100)
		first := make(chan error, 1)
		go func() {
			_, err := f.client.Authorize(ctx(t), req)
			first <- err
		}()
		eventually(t, func() bool { return f.sim.Ledger().InFlight == 1 })
		_, err := f.client.Authorize(ctx(t), req)
		if e := wantKind(t, err, gateway.KindUnknown); e.Code != "idempotency_key_in_use" || e.Status != http.StatusConflict {
			t.Errorf("error = %+v", e)
		}
		if err := f.sim.ClearFaults(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-first:
			if err != nil {
				t.Errorf("first request: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("first request still held")
		}
	})
}

// A bank that strays from the page in what it answers with a 200: a
// status the protocol does not name proves nothing (read as a decline, an
// approval it stands for would never be reversed), while a created_at
// storepay cannot parse changes nothing, because nothing reads it.
func TestAnswersOffThePage(t *testing.T) {
	answer := func(t *testing.T, body string) *acquirer.Client {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, body)
		}))
		t.Cleanup(srv.Close)
		return newClient(t, srv.URL, apiKey)
	}
	for _, status := range []string{"pending", "Approved", "captured", "reversed"} {
		c := answer(t, `{"id":"auth_1","reference":"pay_x","status":"`+status+`","amount":100,"captured_amount":100,"currency":"USD","auth_code":"A1","decline_code":""}`)
		_, err := c.Authorize(ctx(t), sale("pay_x", 100))
		wantKind(t, err, gateway.KindUnknown)
	}
	for _, at := range []string{`"2026-11-21 10:15:00"`, `""`, `1763720100`, `null`} {
		c := answer(t, `{"id":"auth_1","reference":"pay_x","status":"approved","amount":100,"captured_amount":100,"currency":"USD","auth_code":"A1","decline_code":"","created_at":`+at+`}`)
		auth, err := c.Authorize(ctx(t), sale("pay_x", 100))
		if err != nil || auth.Status != gateway.StatusApproved || auth.ID != "auth_1" {
			t.Errorf("created_at %s: %+v %v", at, auth, err)
		}
	}
}

// TestErrorsNeverShowTheCard provokes every failure with a card number in
// the request and checks that none of the errors shows it.
func TestErrorsNeverShowTheCard(t *testing.T) {
	f := newFixture(t, nil)
	for name, faults := range map[string]banksim.Faults{
		"Refuse":         {Refuse: true},
		"Error":          {Error: &banksim.Fault{}},
		"NotProcessed":   {NotProcessed: &banksim.Fault{}},
		"RateLimit":      {RateLimit: &banksim.RateLimit{}},
		"Unauthorized":   {Unauthorized: &banksim.Fault{}},
		"DropAfterApply": {DropAfterApply: &banksim.Fault{}},
		"Blackhole":      {Blackhole: &banksim.Fault{}},
		"None":           {},
	} {
		t.Run(name, func(t *testing.T) {
			f.faults(t, faults)
			defer func() { _ = f.sim.ClearFaults() }()
			for _, pan := range []string{testPAN, badPAN} {
				req := sale("pay_"+name+pan, 100)
				req.Card.PAN = pan
				short, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
				_, err := f.client.Authorize(short, req)
				cancel()
				if err == nil {
					if name == "None" && pan == testPAN {
						continue
					}
					t.Fatalf("%s: no error", pan)
				}
				noPAN(t, err)
			}
		})
	}
}

// eventually polls cond until it holds, failing after a few seconds.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the bank")
		}
		<-tick.C
	}
}
