package acquirer

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"storepay/gateway"
)

var _ gateway.Endpoint = (*Client)(nil)

// Size limits of the bank's answers. A larger answer is not read to the
// end: a 200 is then KindUnknown.
const (
	maxJSONAnswer       = 1 << 20  // 1 MiB: a lookup lists a handful of authorizations
	maxSettlementAnswer = 64 << 20 // 64 MiB: one business day of one store
)

// codeInvalidRequest is the Code of a request the client refused to send
// because it broke the protocol (an empty id, a bad idempotency key).
const codeInvalidRequest = "invalid_request"

// Config configures a [Client] for one URL of one bank.
type Config struct {
	// BaseURL is the bank's URL; the protocol paths (/v1/...) are appended
	// to it.
	BaseURL string
	// APIKey is sent as "Authorization: Bearer <APIKey>" on every request.
	APIKey string
	// MerchantID is the store's id at this bank. When set, it is the
	// merchant_id of every authorization; when empty,
	// AuthRequest.MerchantID is sent.
	MerchantID string
	// Gateway is the bank's configured name, copied into every
	// *gateway.Error.
	Gateway string
	// HTTPClient sends the requests. Nil means a dedicated client from
	// [NewHTTPClient]. A client given here should not follow redirects.
	HTTPClient *http.Client
}

// Client speaks the acquirer-json protocol to one URL of one bank. It is
// safe for concurrent use.
type Client struct {
	cfg  Config
	base string // BaseURL without a trailing slash
	hc   *http.Client
}

// New returns a Client for cfg.
func New(cfg Config) *Client {
	hc := cfg.HTTPClient
	if hc == nil {
		hc = NewHTTPClient()
	}
	return &Client{cfg: cfg, base: strings.TrimRight(cfg.BaseURL, "/"), hc: hc}
}

// NewHTTPClient returns the dedicated HTTP client a [Client] uses by
// default: HTTP/1.1 only (as the protocol says), bounded dial, TLS and
// response-header waits, a bounded connection pool, and no redirects (a
// redirect answer is an unknown outcome, not something to follow with a
// payment). Callers cut individual calls shorter through their context.
func NewHTTPClient() *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	transport := &http.Transport{
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            dialer.DialContext,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    5 * time.Second,
		ResponseHeaderTimeout:  60 * time.Second, // a backstop for callers without a deadline
		MaxIdleConns:           64,
		MaxIdleConnsPerHost:    64,
		MaxConnsPerHost:        256,
		IdleConnTimeout:        60 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		Protocols:              protocols,
	}
	return &http.Client{
		Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// URL returns the bank URL the client talks to.
func (c *Client) URL() string { return c.base }

// authorizeBody is the wire form of POST /v1/authorizations. Field order
// is fixed, so the same request always encodes to the same bytes.
type authorizeBody struct {
	MerchantID string       `json:"merchant_id"`
	TerminalID string       `json:"terminal_id"`
	Reference  string       `json:"reference"`
	Amount     int64        `json:"amount"`
	Currency   string       `json:"currency"`
	Capture    bool         `json:"capture"`
	Stored     bool         `json:"stored"`
	Card       gateway.Card `json:"card"`
}

// Authorize sends POST /v1/authorizations. A decline is a success: an
// Authorization with Status "declined" and a DeclineCode. A card that fails
// the bank's checks is a KindRejected error with Code "invalid_card".
func (c *Client) Authorize(ctx context.Context, req gateway.AuthRequest) (gateway.Authorization, error) {
	merchant := c.cfg.MerchantID
	if merchant == "" {
		merchant = req.MerchantID
	}
	body := authorizeBody{
		MerchantID: merchant,
		TerminalID: req.TerminalID,
		Reference:  req.Reference,
		Amount:     req.Amount,
		Currency:   req.Currency,
		Capture:    req.Capture,
		Stored:     req.Stored,
		Card:       req.Card,
	}
	var auth gateway.Authorization
	err := c.post(ctx, "/v1/authorizations", req.Key, body, &auth)
	if err != nil {
		return gateway.Authorization{}, err
	}
	if err := c.checkAuthorization(auth); err != nil {
		return gateway.Authorization{}, err
	}
	// The protocol answers approved or declined. Anything else proves
	// nothing: read as a decline, the bank might hold an approval that
	// nobody reverses.
	if auth.Status != gateway.StatusApproved && auth.Status != gateway.StatusDeclined {
		// The status is the bank's text: redacted, as any it sends.
		return gateway.Authorization{}, c.fail(gateway.KindUnknown, http.StatusOK, "",
			fmt.Errorf("authorization answered with status %q, neither approved nor declined", redact(auth.Status)))
	}
	return auth, nil
}

// Find sends GET /v1/authorizations with the reference or the idempotency
// key of by. An empty list means the bank never processed the payment.
func (c *Client) Find(ctx context.Context, by gateway.Lookup) ([]gateway.Authorization, error) {
	q := url.Values{}
	switch {
	case by.Reference != "" && by.IdempotencyKey == "":
		q.Set("reference", by.Reference)
	case by.IdempotencyKey != "" && by.Reference == "":
		q.Set("idempotency_key", by.IdempotencyKey)
	default:
		return nil, c.invalid("a lookup needs exactly one of reference and idempotency key")
	}
	var list authorizationList
	if err := c.get(ctx, "/v1/authorizations?"+q.Encode(), &list); err != nil {
		return nil, err
	}
	return c.checkAuthorizations(list)
}

// Capture sends POST /v1/authorizations/{id}/captures. A second capture
// under another key is a KindRejected error with Code "already_captured".
func (c *Client) Capture(ctx context.Context, req gateway.CaptureRequest) (gateway.Authorization, error) {
	if req.AuthorizationID == "" {
		return gateway.Authorization{}, c.invalid("capture without an authorization id")
	}
	body := struct {
		Amount int64 `json:"amount"`
	}{req.Amount}
	var auth gateway.Authorization
	path := "/v1/authorizations/" + url.PathEscape(req.AuthorizationID) + "/captures"
	if err := c.post(ctx, path, req.Key, body, &auth); err != nil {
		return gateway.Authorization{}, err
	}
	return auth, c.checkAuthorization(auth)
}

// Reverse voids an authorization: POST /v1/authorizations/{id}/reversals
// when the id is known, else POST /v1/reversals by reference, which lists
// what the bank reversed (possibly nothing). A settled authorization is a
// KindRejected error with Code "already_settled".
func (c *Client) Reverse(ctx context.Context, req gateway.ReverseRequest) ([]gateway.Authorization, error) {
	if req.AuthorizationID != "" {
		var auth gateway.Authorization
		path := "/v1/authorizations/" + url.PathEscape(req.AuthorizationID) + "/reversals"
		if err := c.post(ctx, path, req.Key, struct{}{}, &auth); err != nil {
			return nil, err
		}
		if err := c.checkAuthorization(auth); err != nil {
			return nil, err
		}
		return []gateway.Authorization{auth}, nil
	}
	if req.Reference == "" {
		return nil, c.invalid("reversal without an authorization id or a reference")
	}
	body := struct {
		Reference string `json:"reference"`
	}{req.Reference}
	var list authorizationList
	if err := c.post(ctx, "/v1/reversals", req.Key, body, &list); err != nil {
		return nil, err
	}
	return c.checkAuthorizations(list)
}

// Refund sends POST /v1/refunds. Refunding more than was captured is a
// KindRejected error with Code "refund_exceeds_capture".
func (c *Client) Refund(ctx context.Context, req gateway.RefundRequest) (gateway.Refund, error) {
	if req.AuthorizationID == "" {
		return gateway.Refund{}, c.invalid("refund without an authorization id")
	}
	body := struct {
		AuthorizationID string `json:"authorization_id"`
		Amount          int64  `json:"amount"`
		Reference       string `json:"reference"`
	}{req.AuthorizationID, req.Amount, req.Reference}
	var refund gateway.Refund
	if err := c.post(ctx, "/v1/refunds", req.Key, body, &refund); err != nil {
		return gateway.Refund{}, err
	}
	if refund.ID == "" {
		return gateway.Refund{}, c.fail(gateway.KindUnknown, http.StatusOK, "", errors.New("refund answer without an id"))
	}
	return refund, nil
}

// Health sends GET /v1/health. It returns nil when the bank answers
// {"status":"ok"}; another status is a KindNotProcessed error whose Code
// is that status.
func (c *Client) Health(ctx context.Context) error {
	var h struct {
		Status string `json:"status"`
	}
	if err := c.get(ctx, "/v1/health", &h); err != nil {
		return err
	}
	if h.Status != "ok" {
		return c.fail(gateway.KindNotProcessed, http.StatusOK, redact(h.Status), errors.New("bank is not accepting work"))
	}
	return nil
}

// Settlement sends GET /v1/settlements/{date} and returns the CSV report
// as the bank sent it. A day the bank has not closed is a KindRejected
// error with Status 404.
func (c *Client) Settlement(ctx context.Context, date string) ([]byte, error) {
	if date == "" {
		return nil, c.invalid("settlement without a date")
	}
	return c.roundTrip(ctx, http.MethodGet, "/v1/settlements/"+url.PathEscape(date), "", nil, maxSettlementAnswer)
}

// post sends a JSON body under an idempotency key and decodes a 200.
func (c *Client) post(ctx context.Context, path, key string, in, out any) error {
	if !validKey(key) {
		return c.invalid("the idempotency key must be 1 to 255 printable ASCII characters")
	}
	payload, err := json.Marshal(in)
	if err != nil {
		// Cannot happen with the fixed body types above. The error is
		// not wrapped: it could describe the body.
		return c.fail(gateway.KindNotSent, 0, "", errors.New("encode request"))
	}
	data, err := c.roundTrip(ctx, http.MethodPost, path, key, payload, maxJSONAnswer)
	if err != nil {
		return err
	}
	return c.decode(data, out)
}

// get sends a GET and decodes a 200.
func (c *Client) get(ctx context.Context, path string, out any) error {
	data, err := c.roundTrip(ctx, http.MethodGet, path, "", nil, maxJSONAnswer)
	if err != nil {
		return err
	}
	return c.decode(data, out)
}

func (c *Client) decode(data []byte, out any) error {
	if err := json.Unmarshal(data, out); err != nil {
		// encoding/json names types and fields, and also the number it
		// could not store ("cannot unmarshal number 4242424242424242.5"),
		// which may be a card number: the text is redacted, and the
		// error not wrapped (nothing tells json's errors apart here).
		return c.fail(gateway.KindUnknown, http.StatusOK, "", errors.New("decode answer: "+redact(err.Error())))
	}
	return nil
}

// roundTrip sends one request and returns the body of a 200 answer, or a
// classified *gateway.Error.
func (c *Client) roundTrip(ctx context.Context, method, path, key string, payload []byte, limit int64) ([]byte, error) {
	var body io.Reader
	if payload != nil {
		body = bytes.NewReader(payload)
	}
	var sent sendTrace
	ctx = httptrace.WithClientTrace(ctx, sent.clientTrace())
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, c.fail(gateway.KindNotSent, 0, "", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.APIKey)
	if payload != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}

	resp, err := c.hc.Do(req)
	if err != nil {
		// *url.Error names the method and URL (ids and references, never
		// a card number) and wraps the cause, so errors.Is still sees
		// context.DeadlineExceeded and friends.
		kind := gateway.KindUnknown
		if !sent.wrote.Load() {
			kind = gateway.KindNotSent
		}
		return nil, c.fail(kind, 0, "", err)
	}
	defer resp.Body.Close()

	data, readErr := readLimited(resp.Body, limit)
	if resp.StatusCode == http.StatusOK {
		if readErr != nil {
			return nil, c.fail(gateway.KindUnknown, http.StatusOK, "", fmt.Errorf("read answer: %w", readErr))
		}
		return data, nil
	}
	return nil, c.classify(resp, data, readErr)
}

// classify turns a non-200 answer into a *gateway.Error per the protocol's
// outcome table. The status line alone decides, except for 503, where only
// a readable not_processed body proves that nothing was done.
func (c *Client) classify(resp *http.Response, data []byte, readErr error) error {
	var body struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if readErr == nil {
		_ = json.Unmarshal(data, &body) // a missing or odd body leaves Code empty
	}
	code, msg := redact(body.Code), redact(body.Message)
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	e := c.fail(gateway.KindUnknown, resp.StatusCode, code, errors.New(msg))
	switch resp.StatusCode {
	case http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity:
		e.Kind = gateway.KindRejected
	case http.StatusUnauthorized:
		e.Kind = gateway.KindUnauthorized
	case http.StatusTooManyRequests:
		e.Kind = gateway.KindRateLimited
		e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	case http.StatusServiceUnavailable:
		if code == "not_processed" {
			e.Kind = gateway.KindNotProcessed
		}
	}
	return e
}

func (c *Client) fail(kind gateway.Kind, status int, code string, err error) *gateway.Error {
	return &gateway.Error{Kind: kind, Gateway: c.cfg.Gateway, URL: c.base, Status: status, Code: code, Err: err}
}

// invalid is a request the client refuses to send: rejected, and nothing
// was sent.
func (c *Client) invalid(msg string) error {
	return c.fail(gateway.KindRejected, 0, codeInvalidRequest, errors.New(msg))
}

// checkAuthorization makes a 200 without an id or a status unknown: it
// proves nothing about what the bank did.
func (c *Client) checkAuthorization(a gateway.Authorization) error {
	if a.ID == "" || a.Status == "" {
		return c.fail(gateway.KindUnknown, http.StatusOK, "", errors.New("authorization answer without an id or a status"))
	}
	return nil
}

// authorizationList is the protocol's {"data": [<authorization>...]}.
// Data stays nil when the answer has no list at all (no "data", or
// null), which is not the empty list.
type authorizationList struct {
	Data *[]gateway.Authorization `json:"data"`
}

// checkAuthorizations makes a 200 without its list unknown: an empty list
// says the bank never processed the payment (a lookup) or reversed
// nothing, and an answer that lacks one proves neither.
func (c *Client) checkAuthorizations(list authorizationList) ([]gateway.Authorization, error) {
	if list.Data == nil {
		return nil, c.fail(gateway.KindUnknown, http.StatusOK, "", errors.New(`answer without its "data" list`))
	}
	for _, a := range *list.Data {
		if err := c.checkAuthorization(a); err != nil {
			return nil, err
		}
	}
	return *list.Data, nil
}

// sendTrace records whether the transport wrote any part of the request.
// Headers are written into a buffer before they reach the socket, so a
// marked trace may still mean nothing was sent: the safe side. An unmarked
// trace means the request never got past dialing, TLS or the wait for a
// pooled connection.
type sendTrace struct{ wrote atomic.Bool }

func (t *sendTrace) clientTrace() *httptrace.ClientTrace {
	mark := func() { t.wrote.Store(true) }
	return &httptrace.ClientTrace{
		WroteHeaderField: func(string, []string) { mark() },
		WroteHeaders:     mark,
		WroteRequest:     func(httptrace.WroteRequestInfo) { mark() },
	}
}

// readLimited reads at most limit bytes; a longer body is an error.
func readLimited(r io.Reader, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("answer larger than %d bytes", limit)
	}
	return data, nil
}

// maxRetryAfter caps what a bank's Retry-After may ask, in either form:
// a date decades ahead is no more a plan than a huge number of seconds.
const maxRetryAfter = 24 * time.Hour

// parseRetryAfter reads a Retry-After value: delay seconds or an HTTP
// date, at most maxRetryAfter. It returns 0 when the value is missing,
// unreadable or past.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	// Seconds past int64 parse as the largest (or smallest) int64.
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}

// validKey reports whether key is 1 to 255 printable ASCII characters, as
// the protocol requires of an Idempotency-Key.
func validKey(key string) bool {
	if len(key) == 0 || len(key) > 255 {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 0x20 || key[i] > 0x7e {
			return false
		}
	}
	return true
}

// redact masks every run of 12 or more digits (spaces and dashes allowed
// between them) in text that came from the bank, so that a bank echoing a
// card number in an error message cannot leak it into storepay's errors
// and logs.
func redact(s string) string {
	var b strings.Builder
	i := 0
	for i < len(s) {
		if !isDigit(s[i]) {
			b.WriteByte(s[i])
			i++
			continue
		}
		j, digits, end := i, 0, i
		for j < len(s) && (isDigit(s[j]) || s[j] == ' ' || s[j] == '-') {
			if isDigit(s[j]) {
				digits++
				end = j + 1
			}
			j++
		}
		if digits >= 12 {
			b.WriteString("[redacted]")
		} else {
			b.WriteString(s[i:end])
		}
		i = end
	}
	return b.String()
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
