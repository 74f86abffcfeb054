// Package gateway owns storepay's side of the banks: the bank-neutral
// request and answer types, the classification of every failed bank call
// into "nothing was done" or "outcome unknown", and the router that picks a
// bank for each call.
//
// The classification is the heart of "never charge a card twice": only an
// error whose [Error.NothingDone] is true may be sent to another bank.
// Everything else stays with the bank that saw it until it is resolved by a
// same-key retry, a lookup or a reversal.
//
// Protocol adapters live in subpackages (gateway/acquirer speaks the
// acquirer-json protocol); gateway/banksim is a simulated bank that serves
// the same protocol for tests, the demo and outage rehearsals.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Card is the card data sent to a bank. It is the only type in storepay
// that holds a full card number; its String and LogValue methods mask it so
// that it cannot leak through fmt or slog by accident.
type Card struct {
	PAN      string `json:"pan"`
	ExpMonth int    `json:"exp_month"`
	ExpYear  int    `json:"exp_year"`
}

// Last4 returns the last four digits of the card number.
func (c Card) Last4() string {
	if len(c.PAN) < 4 {
		return c.PAN
	}
	return c.PAN[len(c.PAN)-4:]
}

// String masks the card number.
func (c Card) String() string {
	return fmt.Sprintf("card(****%s %02d/%d)", c.Last4(), c.ExpMonth, c.ExpYear)
}

// GoString masks the card number for %#v too.
func (c Card) GoString() string { return c.String() }

// LogValue masks the card number in structured logs.
func (c Card) LogValue() slog.Value { return slog.StringValue(c.String()) }

// AuthRequest asks a bank to authorize (and, with Capture, capture) a card
// payment. Amounts are int64 minor units of Currency (ISO 4217).
type AuthRequest struct {
	// Key is the downstream idempotency key. It is derived from the payment
	// id and reused on every retry, at every URL of the same bank.
	Key        string
	MerchantID string
	TerminalID string
	// Reference is storepay's payment id, echoed in the settlement report.
	Reference string
	Amount    int64
	Currency  string
	Capture   bool
	// Stored marks an advice forwarded from store-and-forward.
	Stored bool
	Card   Card
}

// Authorization is a bank's record of an authorization.
type Authorization struct {
	ID             string `json:"id"`
	Reference      string `json:"reference"`
	Status         string `json:"status"` // approved, declined, reversed
	Amount         int64  `json:"amount"`
	CapturedAmount int64  `json:"captured_amount"`
	Currency       string `json:"currency"`
	AuthCode       string `json:"auth_code"`
	DeclineCode    string `json:"decline_code"`
	// created_at is not read: nothing storepay decides depends on the
	// bank's clock, and a time it could not parse must not turn a
	// bank's answer into an unknown outcome.
}

// Authorization statuses as the acquirer protocol names them.
const (
	StatusApproved = "approved"
	StatusDeclined = "declined"
	StatusReversed = "reversed"
)

// CaptureRequest captures a pre-authorization.
type CaptureRequest struct {
	Key             string
	AuthorizationID string
	Amount          int64
}

// ReverseRequest voids an authorization that is not settled yet. When
// AuthorizationID is empty the bank reverses whatever it holds under
// Reference (for a caller that never learned the authorization id).
type ReverseRequest struct {
	Key             string
	AuthorizationID string
	Reference       string
}

// RefundRequest refunds part or all of a captured authorization.
type RefundRequest struct {
	Key             string
	AuthorizationID string
	Amount          int64
	Reference       string
}

// Refund is a bank's record of a refund.
type Refund struct {
	ID              string `json:"id"`
	AuthorizationID string `json:"authorization_id"`
	Amount          int64  `json:"amount"`
	Status          string `json:"status"`
}

// Lookup finds what a bank holds under a reference or an idempotency key.
// Exactly one of the two is set.
type Lookup struct {
	Reference      string
	IdempotencyKey string
}

// Endpoint is one URL of one bank. Every method returns either a result or
// an *Error that classifies the failure (see [Kind]). Implementations must
// honour ctx: a cancelled context cuts the call off.
type Endpoint interface {
	// URL is the endpoint's base URL, for logs and the gateways view.
	URL() string
	Authorize(ctx context.Context, req AuthRequest) (Authorization, error)
	Find(ctx context.Context, by Lookup) ([]Authorization, error)
	Capture(ctx context.Context, req CaptureRequest) (Authorization, error)
	Reverse(ctx context.Context, req ReverseRequest) ([]Authorization, error)
	Refund(ctx context.Context, req RefundRequest) (Refund, error)
	// Health is the cheap probe (GET /v1/health); nil means the bank
	// accepts work.
	Health(ctx context.Context) error
	// Settlement returns the raw settlement report (CSV) of a business
	// date, YYYY-MM-DD. A day the bank has not closed yet is an *Error of
	// kind KindRejected with Status 404.
	Settlement(ctx context.Context, date string) ([]byte, error)
}

// Kind says what a failed bank call proves about the bank's state.
type Kind int

const (
	// KindUnknown: the request may have been processed (a 5xx other than
	// 503 not_processed, a reset or a timeout after the request was sent,
	// a 409 idempotency_key_in_use, an unreadable 200). The caller must
	// resolve it at the same bank before going anywhere else.
	KindUnknown Kind = iota
	// KindNotSent: nothing reached the bank (connection refused, DNS or
	// TLS failure, a deadline that expired before the request was written).
	KindNotSent
	// KindNotProcessed: the bank answered 503 with code not_processed.
	KindNotProcessed
	// KindRateLimited: the bank answered 429; RetryAfter may be set.
	KindRateLimited
	// KindUnauthorized: the bank answered 401. A configuration fault.
	KindUnauthorized
	// KindRejected: the bank answered 400, 404 or 422; nothing was done.
	// Code carries the bank's error code (invalid_card, already_captured,
	// refund_exceeds_capture, idempotency_key_reuse, ...).
	KindRejected
	// KindUnavailable: storepay did not call the bank at all (breaker
	// open, bank disabled, rate limit or bulkhead full, emergency stop).
	KindUnavailable
)

func (k Kind) String() string {
	switch k {
	case KindUnknown:
		return "unknown"
	case KindNotSent:
		return "not_sent"
	case KindNotProcessed:
		return "not_processed"
	case KindRateLimited:
		return "rate_limited"
	case KindUnauthorized:
		return "unauthorized"
	case KindRejected:
		return "rejected"
	case KindUnavailable:
		return "unavailable"
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Error is a failed bank call, classified by what it proves.
type Error struct {
	Kind Kind
	// Gateway is the bank's configured name; URL the endpoint that failed.
	Gateway string
	URL     string
	// Status is the HTTP status when the bank answered, else 0.
	Status int
	// Code is the bank's error code from its error body, if any.
	Code string
	// RetryAfter is the bank's Retry-After on a 429, if any.
	RetryAfter time.Duration
	// Err is the underlying cause. It never contains a card number.
	Err error
}

func (e *Error) Error() string {
	s := "gateway"
	if e.Gateway != "" {
		s += " " + e.Gateway
	}
	s += ": " + e.Kind.String()
	if e.Status != 0 {
		s += fmt.Sprintf(" (HTTP %d", e.Status)
		if e.Code != "" {
			// A comma, not a space: the status's digits and a code's
			// ("422" and "242 4242242") must not read as one card number.
			s += ", " + e.Code
		}
		s += ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// NothingDone reports whether the failure proves the bank did nothing, so
// that the same request may be sent to another bank.
func (e *Error) NothingDone() bool { return e.Kind != KindUnknown }

// AsError returns the *Error in err's chain, or nil.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// NothingDone reports whether err provably left the bank untouched. Any
// error that is not a classified *Error (a bug, a cancelled context before
// classification) counts as unknown: the safe answer.
func NothingDone(err error) bool {
	e := AsError(err)
	return e != nil && e.NothingDone()
}

// Reverser is an Endpoint whose protocol resolves an unknown outcome by a
// reversal advice rather than by a lookup (ISO 8583 has no lookup).
// ResolveUnknown reverses whatever the bank may have done with the
// request under req.Key and returns nil once the bank acknowledged it:
// the bank then holds nothing of that request, and the payment may go to
// another bank. Any error leaves the outcome unknown.
type Reverser interface {
	ResolveUnknown(ctx context.Context, req AuthRequest) error
}

// Adviser is an Endpoint whose protocol delivers captures and reversals
// as advices (ISO 8583's 0220 and 0420): once written ahead they are
// repeated until the bank answers, even when it said it did nothing.
type Adviser interface {
	DeliversAdvices() bool
}

// CodeNotSupported is the Code of a call the bank's protocol has no
// message for (ISO 8583's lookup and settlement report).
const CodeNotSupported = "not_supported"

// NoLookup reports whether err says the bank's protocol has no lookup
// (or no settlement report): nothing can be learned by asking, and a
// repeat under the same key (the same RRN) is how its answer is heard.
func NoLookup(err error) bool {
	e := AsError(err)
	return e != nil && e.Kind == KindRejected && e.Code == CodeNotSupported
}
