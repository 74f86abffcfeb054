package acquirer_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"storepay/gateway"
	"storepay/gateway/acquirer"
)

// answer is a bank's answer, made up by the fuzzer and handed to the
// client by an in-process transport: no socket, every byte from the
// fuzzer.
type answer struct {
	status     int
	retryAfter string
	body       []byte
	broken     bool // the body breaks off half way (a reset while reading)
}

func (a answer) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		io.Copy(io.Discard, req.Body)
		req.Body.Close()
	}
	var body io.Reader = bytes.NewReader(a.body)
	if a.broken {
		body = io.MultiReader(bytes.NewReader(a.body[:len(a.body)/2]), errReader{})
	}
	h := http.Header{"Content-Type": {"application/json"}}
	if a.retryAfter != "" {
		h.Set("Retry-After", a.retryAfter)
	}
	return &http.Response{StatusCode: a.status, Status: http.StatusText(a.status), Header: h, Body: io.NopCloser(body),
		ContentLength: -1, Request: req, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}, nil
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, io.ErrUnexpectedEOF }

// The client's calls, by the fuzzer's op byte.
var fuzzOps = []string{"authorize", "find", "capture", "reverse", "reverse_by_reference", "refund", "health", "settlement"}

// FuzzBankAnswers hands every client method an arbitrary answer (status,
// Retry-After, body, a body cut off) and holds the result to the
// protocol's outcome table:
//
//   - no panic;
//   - a non-200 is a *gateway.Error with that status and the table's
//     kind (400/404/422 rejected, 401 unauthorized, 429 rate limited
//     with a Retry-After between 0 and 24h, 503 not_processed only with
//     that code, anything else unknown);
//   - a 200 that cannot be read (cut off, not JSON, missing the id, the
//     status or the list the method needs) is KindUnknown, never a
//     success with zero values; a success carries what the protocol
//     says a 200 holds;
//   - no error text carries a card number: not the one sent, not one the
//     bank put in its answer.
func FuzzBankAnswers(f *testing.F) {
	approved := `{"id":"auth_7GxQ","reference":"pay_1","status":"approved","amount":1250,"captured_amount":1250,"currency":"USD","auth_code":"A1B2C3","decline_code":"","created_at":"2026-11-21T10:15:00Z"}`
	for op, body := range []string{
		approved,
		`{"data":[` + approved + `]}`,
		strings.Replace(approved, `"captured_amount":1250`, `"captured_amount":1450`, 1),
		strings.Replace(approved, `"approved"`, `"reversed"`, 1),
		`{"data":[]}`,
		`{"id":"rfd_1","authorization_id":"auth_7GxQ","amount":500,"status":"refunded"}`,
		`{"status":"ok"}`,
		"batch_number,merchant_id,psp_reference,merchant_reference,type,booking_date,currency,gross_amount,fee_amount,net_amount,card_last4,auth_code\n",
	} {
		f.Add(uint8(op), uint16(200), "", []byte(body), false)
	}
	f.Add(uint8(0), uint16(200), "", []byte(`{"id":"auth_1","status":"4242424242424242"}`), false)
	f.Add(uint8(0), uint16(200), "", []byte(`{"id":"auth_1","status":"approved","amount":4242424242424242.5}`), false)
	f.Add(uint8(0), uint16(200), "", []byte(`null`), false)
	f.Add(uint8(1), uint16(200), "", []byte(`{}`), false)
	f.Add(uint8(4), uint16(200), "", []byte(`{"data":null}`), false)
	f.Add(uint8(0), uint16(200), "", []byte(approved), true)
	f.Add(uint8(0), uint16(422), "", []byte(`{"code":"invalid_card","message":"card 4242 4242 4242 4242 fails the Luhn check"}`), false)
	f.Add(uint8(0), uint16(429), "7", []byte(`{"code":"rate_limited","message":"slow down"}`), false)
	f.Add(uint8(2), uint16(429), "Sat, 21 Nov 2026 10:00:00 GMT", []byte(`{"code":"rate_limited"}`), false)
	f.Add(uint8(0), uint16(503), "", []byte(`{"code":"not_processed","message":"maintenance"}`), false)
	f.Add(uint8(0), uint16(503), "", []byte(`{"code":"not_processed"`), false)
	f.Add(uint8(5), uint16(500), "", []byte(`<html>oops</html>`), false)
	f.Add(uint8(3), uint16(409), "", []byte(`{"code":"idempotency_key_in_use","message":"still working"}`), false)
	f.Add(uint8(6), uint16(401), "", []byte(`{"code":"unauthorized","message":"bad key"}`), false)
	f.Add(uint8(7), uint16(404), "", []byte(`{"code":"not_found","message":"day not closed"}`), false)
	f.Add(uint8(0), uint16(302), "", []byte(``), false)

	f.Fuzz(func(t *testing.T, op uint8, status uint16, retryAfter string, body []byte, broken bool) {
		code := int(status) % 600 // an HTTP status, 100 to 599
		if code < 100 {
			code += 100
		}
		a := answer{status: code, retryAfter: retryAfter, body: body, broken: broken && len(body) > 0}
		hc := acquirer.NewHTTPClient()
		hc.Transport = a
		c := acquirer.New(acquirer.Config{BaseURL: "http://bank.invalid", APIKey: "sk_test", MerchantID: "store-042", Gateway: "bank-a", HTTPClient: hc})
		name := fuzzOps[int(op)%len(fuzzOps)]
		res, err := callOp(c, name)

		if err != nil {
			msg := err.Error()
			if strings.Contains(msg, testPAN) || gateway.MaskPANs(msg) != msg {
				t.Fatalf("%s: error carries a card number: %q", name, msg)
			}
		}
		if a.status != http.StatusOK {
			checkRefusal(t, name, a, err)
			return
		}
		if err != nil {
			e := gateway.AsError(err)
			if e == nil {
				t.Fatalf("%s: 200 %q: error %v is not a *gateway.Error", name, body, err)
			}
			if e.Kind != gateway.KindUnknown && !(name == "health" && e.Kind == gateway.KindNotProcessed && !a.broken) {
				t.Fatalf("%s: 200 %q: %v is %s, want unknown: a 200 proves the bank may have acted", name, body, err, e.Kind)
			}
			return
		}
		if a.broken {
			t.Fatalf("%s: an answer cut off half way (%q) was read as a success: %+v", name, body, res)
		}
		if why := unreadable(name, body, res); why != "" {
			t.Fatalf("%s: 200 %q read as a success (%+v), but %s", name, body, res, why)
		}
	})
}

// callOp calls one client method with a well-formed request.
func callOp(c *acquirer.Client, op string) (any, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch op {
	case "authorize":
		return c.Authorize(ctx, sale("pay_1", 1250))
	case "find":
		return c.Find(ctx, gateway.Lookup{Reference: "pay_1"})
	case "capture":
		return c.Capture(ctx, gateway.CaptureRequest{Key: "pay_1:capture", AuthorizationID: "auth_7GxQ", Amount: 1450})
	case "reverse":
		return c.Reverse(ctx, gateway.ReverseRequest{Key: "pay_1:reverse", AuthorizationID: "auth_7GxQ"})
	case "reverse_by_reference":
		return c.Reverse(ctx, gateway.ReverseRequest{Key: "pay_1:reverse", Reference: "pay_1"})
	case "refund":
		return c.Refund(ctx, gateway.RefundRequest{Key: "rfd_1", AuthorizationID: "auth_7GxQ", Amount: 500, Reference: "rfd_1"})
	case "health":
		return nil, c.Health(ctx)
	case "settlement":
		return c.Settlement(ctx, "2026-11-21")
	}
	panic("unknown op " + op)
}

// checkRefusal holds a non-200 answer to the protocol's outcome table.
func checkRefusal(t *testing.T, op string, a answer, err error) {
	t.Helper()
	e := gateway.AsError(err)
	if e == nil {
		t.Fatalf("%s: %d %q: got %v, want a *gateway.Error", op, a.status, a.body, err)
	}
	if e.Status != a.status {
		t.Fatalf("%s: %d answer reported as status %d", op, a.status, e.Status)
	}
	want := gateway.KindUnknown
	switch a.status {
	case 400, 404, 422:
		want = gateway.KindRejected
	case 401:
		want = gateway.KindUnauthorized
	case 429:
		want = gateway.KindRateLimited
		if e.RetryAfter < 0 || e.RetryAfter > 24*time.Hour {
			t.Fatalf("%s: Retry-After %q read as %s", op, a.retryAfter, e.RetryAfter)
		}
	case 503:
		var b struct{ Code string }
		if !a.broken && json.Unmarshal(a.body, &b) == nil && b.Code == "not_processed" {
			want = gateway.KindNotProcessed
		}
	}
	if e.Kind != want {
		t.Fatalf("%s: %d %q (cut off: %v) is %s, want %s", op, a.status, a.body, a.broken, e.Kind, want)
	}
}

// unreadable says why a 200's body does not hold what a success of op
// needs, or "".
func unreadable(op string, body []byte, res any) string {
	if op == "settlement" {
		if !bytes.Equal(res.([]byte), body) {
			return "the report returned is not the one sent"
		}
		return ""
	}
	if !json.Valid(body) {
		return "it is not JSON"
	}
	switch op {
	case "authorize":
		if a := res.(gateway.Authorization); a.ID == "" || (a.Status != gateway.StatusApproved && a.Status != gateway.StatusDeclined) {
			return "an authorization is approved or declined, with an id"
		}
	case "capture", "reverse":
		var a gateway.Authorization
		if op == "capture" {
			a = res.(gateway.Authorization)
		} else if list := res.([]gateway.Authorization); len(list) == 1 {
			a = list[0]
		}
		if a.ID == "" || a.Status == "" {
			return "the authorization has no id or no status"
		}
	case "find", "reverse_by_reference":
		// The protocol's {"data":[...]}: no list is not an empty one,
		// which says the bank never processed the payment.
		var list struct {
			Data *[]json.RawMessage `json:"data"`
		}
		if json.Unmarshal(body, &list) != nil || list.Data == nil {
			return `it has no "data" list`
		}
		for _, a := range res.([]gateway.Authorization) {
			if a.ID == "" || a.Status == "" {
				return "an authorization of the list has no id or no status"
			}
		}
	case "refund":
		if r := res.(gateway.Refund); r.ID == "" {
			return "the refund has no id"
		}
	case "health":
		var h struct{ Status string }
		if json.Unmarshal(body, &h) != nil || h.Status != "ok" {
			return `only {"status":"ok"} says the bank takes work`
		}
	}
	return ""
}
