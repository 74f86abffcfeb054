package banksim

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"
)

// Authorization statuses and decline codes of the protocol.
const (
	statusApproved = "approved"
	statusDeclined = "declined"
	statusReversed = "reversed"
)

// testCards are the protocol's test cards and their declines. Any other
// card that passes the Luhn check is approved.
var testCards = map[string]string{
	"4000000000000002": "do_not_honor",
	"4000000000009995": "insufficient_funds",
	"4000000000000069": "expired_card",
	"4000000000009979": "lost_or_stolen",
}

// authorizationJSON is the protocol's authorization answer.
type authorizationJSON struct {
	ID             string    `json:"id"`
	Reference      string    `json:"reference"`
	Status         string    `json:"status"`
	Amount         int64     `json:"amount"`
	CapturedAmount int64     `json:"captured_amount"`
	Currency       string    `json:"currency"`
	AuthCode       string    `json:"auth_code"`
	DeclineCode    string    `json:"decline_code"`
	CreatedAt      time.Time `json:"created_at"`
}

func wire(a *authRecord) authorizationJSON {
	return authorizationJSON{
		ID:             a.ID,
		Reference:      a.Reference,
		Status:         a.Status,
		Amount:         a.Amount,
		CapturedAmount: a.CapturedAmount,
		Currency:       a.Currency,
		AuthCode:       a.AuthCode,
		DeclineCode:    a.DeclineCode,
		CreatedAt:      a.CreatedAt,
	}
}

// listAnswer answers {"data":[...]} with the wire form of list.
func listAnswer(list []*authRecord) answer {
	data := make([]authorizationJSON, len(list))
	ids := make([]string, len(list))
	for i, a := range list {
		data[i] = wire(a)
		ids[i] = a.ID
	}
	ans := jsonAnswer(http.StatusOK, struct {
		Data []authorizationJSON `json:"data"`
	}{data})
	ans.authIDs = ids
	return ans
}

func authAnswer(a *authRecord) answer {
	ans := jsonAnswer(http.StatusOK, wire(a))
	ans.authIDs = []string{a.ID}
	return ans
}

func invalid(msg string) answer {
	return errorAnswer(http.StatusBadRequest, "invalid_request", msg)
}

func notFound(what string) answer {
	return errorAnswer(http.StatusNotFound, "not_found", what+" not found")
}

func rejected(code, msg string) answer {
	return errorAnswer(http.StatusUnprocessableEntity, code, msg)
}

// errBodyTrailing is a body with more than one JSON value.
var errBodyTrailing = errors.New("unexpected data after the JSON body")

// decode reads a JSON body strictly: one value, no unknown fields. An
// empty body decodes as {}.
func decode(body []byte, v any) error {
	if len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.Decode(&struct{}{}) != io.EOF {
		return errBodyTrailing
	}
	return nil
}

// health answers GET /v1/health.
func (s *Sim) health(*call) answer {
	return jsonAnswer(http.StatusOK, map[string]string{"status": "ok"})
}

type authorizeRequest struct {
	MerchantID string `json:"merchant_id"`
	TerminalID string `json:"terminal_id"`
	Reference  string `json:"reference"`
	Amount     int64  `json:"amount"`
	Currency   string `json:"currency"`
	Capture    bool   `json:"capture"`
	Stored     bool   `json:"stored"`
	Card       struct {
		PAN      string `json:"pan"`
		ExpMonth int    `json:"exp_month"`
		ExpYear  int    `json:"exp_year"`
	} `json:"card"`
}

// authorize answers POST /v1/authorizations: 400 for a malformed request,
// 422 invalid_card for a card number that fails the checks, 422
// invalid_merchant for another merchant, else 200 approved or declined.
func (s *Sim) authorize(c *call) answer {
	var in authorizeRequest
	if err := decode(c.body, &in); err != nil {
		return invalid("malformed authorization: " + err.Error())
	}
	switch {
	case in.MerchantID == "":
		return invalid("merchant_id is required")
	case in.Reference == "":
		return invalid("reference is required")
	case in.Amount <= 0:
		return invalid("amount must be a positive number of minor units")
	case !validCurrency(in.Currency):
		return invalid("currency must be an ISO 4217 code")
	case s.cfg.MerchantID != "" && in.MerchantID != s.cfg.MerchantID:
		return rejected("invalid_merchant", "unknown merchant_id")
	case !validPAN(in.Card.PAN) || in.Card.ExpMonth < 1 || in.Card.ExpMonth > 12 || in.Card.ExpYear < 2000:
		return rejected("invalid_card", "the card number or expiry is not valid")
	}

	now := s.now()
	a := &authRecord{apiKey: c.apiKey, Authorization: Authorization{
		ID:             "auth_" + s.cfg.Rand(),
		Reference:      in.Reference,
		IdempotencyKey: c.key,
		MerchantID:     in.MerchantID,
		TerminalID:     in.TerminalID,
		Amount:         in.Amount,
		Currency:       in.Currency,
		CardLast4:      in.Card.PAN[len(in.Card.PAN)-4:],
		Stored:         in.Stored,
		CreatedAt:      now,
	}}
	expiry := time.Date(in.Card.ExpYear, time.Month(in.Card.ExpMonth)+1, 1, 0, 0, 0, 0, time.UTC)
	switch decline, ok := testCards[in.Card.PAN]; {
	case ok:
		a.Status, a.DeclineCode = statusDeclined, decline
	case !now.Before(expiry):
		a.Status, a.DeclineCode = statusDeclined, "expired_card"
	default:
		a.Status, a.AuthCode = statusApproved, s.cfg.Rand()[:6]
	}

	s.book.mu.Lock()
	defer s.book.mu.Unlock()
	if a.Status == statusApproved && in.Capture {
		a.CapturedAmount, a.CapturedAt = a.Amount, now
		a.BusinessDate = s.book.businessDateLocked(now, s.cfg.LateCutoff)
	}
	s.book.addLocked(a)
	return authAnswer(a)
}

// find answers GET /v1/authorizations?reference=R or ?idempotency_key=K.
// By key it lists the authorizations the key's request created or changed
// (an authorization, capture or reversal; a refund or a rejected request
// lists nothing). A payment still being processed under that reference or
// key is 409: an empty list would wrongly say the bank never saw it.
func (s *Sim) find(c *call) answer {
	q := c.r.URL.Query()
	ref, key := q.Get("reference"), q.Get("idempotency_key")
	switch {
	case (ref == "") == (key == ""):
		return invalid("give exactly one of reference and idempotency_key")
	case ref != "":
		if s.idem.referenceInFlight(c.apiKey, ref) {
			return errorAnswer(http.StatusConflict, "authorization_in_progress", "an authorization with this reference is still being processed")
		}
		s.book.mu.Lock()
		defer s.book.mu.Unlock()
		return listAnswer(s.book.byRef[accountKey{c.apiKey, ref}])
	default:
		if k, ok := parseKey(key); ok {
			key = k
		}
		found, running, ids := s.idem.lookup(c.apiKey, key)
		if found && running {
			return errorAnswer(http.StatusConflict, "idempotency_key_in_use", "a request with this Idempotency-Key is still being processed")
		}
		s.book.mu.Lock()
		defer s.book.mu.Unlock()
		var list []*authRecord
		for _, id := range ids {
			if a := s.book.getLocked(c.apiKey, id); a != nil {
				list = append(list, a)
			}
		}
		return listAnswer(list)
	}
}

// capture answers POST /v1/authorizations/{id}/captures: 404 for an
// unknown id, 422 already_captured, not_approved, or
// capture_exceeds_authorization beyond the authorized amount plus 20%. An
// absent amount captures the authorized amount.
func (s *Sim) capture(c *call) answer {
	var in struct {
		Amount *int64 `json:"amount"`
	}
	if err := decode(c.body, &in); err != nil {
		return invalid("malformed capture: " + err.Error())
	}
	if in.Amount != nil && *in.Amount <= 0 {
		return invalid("amount must be a positive number of minor units")
	}
	now := s.now()
	s.book.mu.Lock()
	defer s.book.mu.Unlock()
	a := s.book.getLocked(c.apiKey, c.r.PathValue("id"))
	if a == nil {
		return notFound("authorization")
	}
	amount := a.Amount
	if in.Amount != nil {
		amount = *in.Amount
	}
	switch {
	case a.Status != statusApproved:
		return rejected("not_approved", "the authorization is "+a.Status)
	case a.CapturedAmount > 0:
		return rejected("already_captured", "the authorization is already captured")
	case amount > a.Amount+a.Amount*20/100:
		return rejected("capture_exceeds_authorization", "a capture may exceed the authorized amount by 20% at most")
	}
	a.CapturedAmount, a.CapturedAt = amount, now
	a.BusinessDate = s.book.businessDateLocked(now, s.cfg.LateCutoff)
	return authAnswer(a)
}

// reverse answers POST /v1/authorizations/{id}/reversals: 404 for an
// unknown id, 422 already_settled or already_refunded, else 200 with the
// authorization (a reversed or declined one is left as it is).
func (s *Sim) reverse(c *call) answer {
	var in struct{}
	if err := decode(c.body, &in); err != nil {
		return invalid("malformed reversal: " + err.Error())
	}
	now := s.now()
	s.book.mu.Lock()
	defer s.book.mu.Unlock()
	a := s.book.getLocked(c.apiKey, c.r.PathValue("id"))
	if a == nil {
		return notFound("authorization")
	}
	if a.Status == statusApproved {
		if ans, ok := s.checkReversibleLocked(a, now); !ok {
			return ans
		}
		a.Status, a.ReversedAt = statusReversed, now
	}
	return authAnswer(a)
}

// reverseByReference answers POST /v1/reversals: it reverses every
// approved authorization under the reference and lists the reference's
// reversed authorizations (possibly none). It is all or nothing: one
// settled authorization makes it 422 already_settled.
func (s *Sim) reverseByReference(c *call) answer {
	var in struct {
		Reference string `json:"reference"`
	}
	if err := decode(c.body, &in); err != nil {
		return invalid("malformed reversal: " + err.Error())
	}
	if in.Reference == "" {
		return invalid("reference is required")
	}
	if s.idem.referenceInFlight(c.apiKey, in.Reference) {
		return errorAnswer(http.StatusConflict, "authorization_in_progress", "an authorization with this reference is still being processed")
	}
	now := s.now()
	s.book.mu.Lock()
	defer s.book.mu.Unlock()
	list := s.book.byRef[accountKey{c.apiKey, in.Reference}]
	for _, a := range list {
		if a.Status != statusApproved {
			continue
		}
		if ans, ok := s.checkReversibleLocked(a, now); !ok {
			return ans
		}
	}
	var reversed []*authRecord
	for _, a := range list {
		if a.Status == statusApproved {
			a.Status, a.ReversedAt = statusReversed, now
		}
		if a.Status == statusReversed {
			reversed = append(reversed, a)
		}
	}
	return listAnswer(reversed)
}

func (s *Sim) checkReversibleLocked(a *authRecord, now time.Time) (answer, bool) {
	switch {
	case s.book.settledLocked(a, now):
		return rejected("already_settled", "the authorization is settled: refund it instead"), false
	case a.RefundedAmount > 0:
		return rejected("already_refunded", "the authorization has refunds"), false
	}
	return answer{}, true
}

// refund answers POST /v1/refunds: 404 for an unknown authorization, 422
// refund_exceeds_capture when the refunds would exceed the captured
// amount, else 200 with the refund.
func (s *Sim) refund(c *call) answer {
	var in struct {
		AuthorizationID string `json:"authorization_id"`
		Amount          int64  `json:"amount"`
		Reference       string `json:"reference"`
	}
	if err := decode(c.body, &in); err != nil {
		return invalid("malformed refund: " + err.Error())
	}
	switch {
	case in.AuthorizationID == "":
		return invalid("authorization_id is required")
	case in.Amount <= 0:
		return invalid("amount must be a positive number of minor units")
	}
	now := s.now()
	s.book.mu.Lock()
	defer s.book.mu.Unlock()
	a := s.book.getLocked(c.apiKey, in.AuthorizationID)
	if a == nil {
		return notFound("authorization")
	}
	switch {
	case a.Status != statusApproved:
		return rejected("not_approved", "the authorization is "+a.Status)
	case a.RefundedAmount+in.Amount > a.CapturedAmount:
		return rejected("refund_exceeds_capture", fmt.Sprintf("refunds would exceed the captured amount of %d", a.CapturedAmount))
	}
	a.RefundedAmount += in.Amount
	r := &refundRecord{apiKey: c.apiKey, Refund: Refund{
		ID:              "rfd_" + s.cfg.Rand(),
		AuthorizationID: a.ID,
		Reference:       in.Reference,
		IdempotencyKey:  c.key,
		Amount:          in.Amount,
		Currency:        a.Currency,
		CreatedAt:       now,
		BusinessDate:    s.book.businessDateLocked(now, s.cfg.LateCutoff),
	}}
	s.book.refunds = append(s.book.refunds, r)
	return jsonAnswer(http.StatusOK, struct {
		ID              string `json:"id"`
		AuthorizationID string `json:"authorization_id"`
		Amount          int64  `json:"amount"`
		Status          string `json:"status"`
	}{r.ID, r.AuthorizationID, r.Amount, "refunded"})
}

// settlement answers GET /v1/settlements/{date} with the day's CSV report,
// 400 for a malformed date, 404 not_closed for a day not closed yet.
func (s *Sim) settlement(c *call) answer {
	day := c.r.PathValue("date")
	if _, err := time.Parse(time.DateOnly, day); err != nil {
		return invalid("date must be YYYY-MM-DD")
	}
	report, ok := s.report(c.apiKey, day)
	if !ok {
		return errorAnswer(http.StatusNotFound, "not_closed", "business date "+day+" is not closed yet")
	}
	return answer{status: http.StatusOK, contentType: "text/csv; charset=utf-8", body: report}
}

// validPAN reports whether pan is 12 to 19 digits passing the Luhn check.
func validPAN(pan string) bool {
	if len(pan) < 12 || len(pan) > 19 {
		return false
	}
	sum := 0
	for i := range len(pan) {
		c := pan[len(pan)-1-i]
		if c < '0' || c > '9' {
			return false
		}
		d := int(c - '0')
		if i%2 == 1 {
			if d *= 2; d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return sum%10 == 0
}

func validCurrency(c string) bool {
	if len(c) != 3 {
		return false
	}
	for i := range 3 {
		if c[i] < 'A' || c[i] > 'Z' {
			return false
		}
	}
	return true
}
