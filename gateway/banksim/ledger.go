package banksim

import (
	"slices"
	"sync"
	"time"
)

// Authorization is the bank's record of an authorization as tests and the
// admin API see it. It keeps the card's last four digits only.
type Authorization struct {
	ID             string    `json:"id"`
	Reference      string    `json:"reference"`
	IdempotencyKey string    `json:"idempotency_key"`
	MerchantID     string    `json:"merchant_id"`
	TerminalID     string    `json:"terminal_id"`
	Status         string    `json:"status"` // approved, declined, reversed
	Amount         int64     `json:"amount"`
	CapturedAmount int64     `json:"captured_amount"`
	RefundedAmount int64     `json:"refunded_amount"`
	Currency       string    `json:"currency"`
	CardLast4      string    `json:"card_last4"`
	AuthCode       string    `json:"auth_code"`
	DeclineCode    string    `json:"decline_code"`
	Stored         bool      `json:"stored"`
	CreatedAt      time.Time `json:"created_at"`
	CapturedAt     time.Time `json:"captured_at,omitzero"`
	ReversedAt     time.Time `json:"reversed_at,omitzero"`
	// BusinessDate is the settlement date of the capture, YYYY-MM-DD.
	BusinessDate string `json:"business_date,omitempty"`
	// Protocol is "iso8583" for an authorization made over ISO 8583,
	// "" for the JSON protocol.
	Protocol string `json:"protocol,omitempty"`
	// RRN is the retrieval reference number of the ISO 8583 message that
	// made it (0100, 0200, or 0220 offline advice); CaptureRRN that of
	// the message that captured it (the sale or advice itself, or the
	// 0220 completion): the psp_reference of its settlement row.
	RRN        string `json:"rrn,omitempty"`
	CaptureRRN string `json:"capture_rrn,omitempty"`
}

// Refund is the bank's record of a refund.
type Refund struct {
	ID              string    `json:"id"`
	AuthorizationID string    `json:"authorization_id"`
	Reference       string    `json:"reference"`
	IdempotencyKey  string    `json:"idempotency_key"`
	Amount          int64     `json:"amount"`
	Currency        string    `json:"currency"`
	CreatedAt       time.Time `json:"created_at"`
	BusinessDate    string    `json:"business_date"`
	// RRN is the retrieval reference number of an ISO 8583 refund: the
	// psp_reference of its settlement row.
	RRN string `json:"rrn,omitempty"`
	// ReversedAt is set when an ISO 8583 reversal advice undid the
	// refund; it is then left out of the settlement report.
	ReversedAt time.Time `json:"reversed_at,omitzero"`
}

// Ledger is a snapshot of everything the bank did and was asked, for
// tests and the admin API.
type Ledger struct {
	// Authorizations in the order they were created.
	Authorizations []Authorization `json:"authorizations"`
	// Refunds in the order they were made.
	Refunds []Refund `json:"refunds"`
	// Requests counts the requests each listener received, by URL then by
	// endpoint (the Endpoint constants) or, at an ISO 8583 listener, by MTI
	// ("0200"; EndpointOther for a frame that was not a message),
	// including requests answered by a fault. Zero counts are left out.
	Requests map[string]map[string]int64 `json:"requests"`
	// InFlight is the number of idempotency keys whose first request is
	// being processed right now.
	InFlight int `json:"in_flight"`
	// ClosedDays are the business dates closed explicitly.
	ClosedDays []string `json:"closed_days"`
}

// ChargesFor counts the approved, not reversed authorizations under
// reference: the number of times that payment charged a card. Anything
// but 0 or 1 is a double charge.
func (l Ledger) ChargesFor(reference string) int {
	n := 0
	for _, a := range l.Authorizations {
		if a.Reference == reference && a.Status == statusApproved {
			n++
		}
	}
	return n
}

// Calls counts the requests to endpoint (an Endpoint constant) at the
// listener url. An empty url counts every listener; an empty endpoint
// counts every endpoint.
func (l Ledger) Calls(url, endpoint string) int64 {
	var n int64
	for u, eps := range l.Requests {
		if url != "" && u != url {
			continue
		}
		for ep, c := range eps {
			if endpoint == "" || ep == endpoint {
				n += c
			}
		}
	}
	return n
}

// FindRRN returns the authorization an ISO 8583 message with rrn made or
// captured.
func (l Ledger) FindRRN(rrn string) (Authorization, bool) {
	for _, a := range l.Authorizations {
		if a.RRN == rrn || a.CaptureRRN == rrn {
			return a, true
		}
	}
	return Authorization{}, false
}

// Find returns the authorization with id.
func (l Ledger) Find(id string) (Authorization, bool) {
	for _, a := range l.Authorizations {
		if a.ID == id {
			return a, true
		}
	}
	return Authorization{}, false
}

// Ledger returns a snapshot of the ledger and the request counters.
func (s *Sim) Ledger() Ledger {
	l := s.book.snapshot()
	l.InFlight = s.idem.running()
	l.Requests = map[string]map[string]int64{}
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	for _, ln := range s.listeners {
		counts := map[string]int64{}
		for i := range ln.calls {
			if n := ln.calls[i].Load(); n > 0 {
				counts[endpointName(i)] = n
			}
		}
		if ln.iso != nil {
			ln.iso.countsInto(counts)
		}
		l.Requests[ln.url] = counts
	}
	return l
}

// book is the ledger proper. The protocol handlers change it under mu;
// the card number never reaches it.
type book struct {
	mu      sync.Mutex
	auths   map[string]*authRecord
	order   []*authRecord
	byRef   map[accountKey][]*authRecord
	refunds []*refundRecord
	closed  map[string]bool   // business dates closed explicitly
	extra   map[string][]byte // raw rows appended to a date's report
}

type authRecord struct {
	apiKey string
	Authorization
}

type refundRecord struct {
	apiKey string
	Refund
}

func (b *book) init() {
	b.auths = map[string]*authRecord{}
	b.order = nil
	b.byRef = map[accountKey][]*authRecord{}
	b.refunds = nil
	b.closed = map[string]bool{}
	b.extra = map[string][]byte{}
}

func (b *book) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
}

func (b *book) snapshot() Ledger {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := Ledger{
		Authorizations: make([]Authorization, len(b.order)),
		Refunds:        make([]Refund, len(b.refunds)),
		ClosedDays:     make([]string, 0, len(b.closed)),
	}
	for i, a := range b.order {
		l.Authorizations[i] = a.Authorization
	}
	for i, r := range b.refunds {
		l.Refunds[i] = r.Refund
	}
	for d := range b.closed {
		l.ClosedDays = append(l.ClosedDays, d)
	}
	slices.Sort(l.ClosedDays)
	return l
}

// addLocked books a new authorization. Caller holds mu.
func (b *book) addLocked(a *authRecord) {
	b.auths[a.ID] = a
	b.order = append(b.order, a)
	k := accountKey{a.apiKey, a.Reference}
	b.byRef[k] = append(b.byRef[k], a)
}

// getLocked returns the authorization id of apiKey's account, or nil.
func (b *book) getLocked(apiKey, id string) *authRecord {
	a := b.auths[id]
	if a == nil || a.apiKey != apiKey {
		return nil
	}
	return a
}

// isClosedLocked reports whether business date day is closed: before
// today's date, or closed explicitly.
func (b *book) isClosedLocked(day string, now time.Time) bool {
	return day < now.Format(time.DateOnly) || b.closed[day]
}

// businessDateLocked is the settlement date of a booking at t: its UTC
// date, the next one after the late cutoff, and never a day already
// closed explicitly (a closed report does not change).
func (b *book) businessDateLocked(t time.Time, cutoff time.Duration) string {
	t = t.UTC()
	midnight := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
	if cutoff > 0 && t.Sub(midnight) >= cutoff {
		midnight = midnight.AddDate(0, 0, 1)
	}
	for b.closed[midnight.Format(time.DateOnly)] {
		midnight = midnight.AddDate(0, 0, 1)
	}
	return midnight.Format(time.DateOnly)
}

// settledLocked reports whether a's capture has been settled.
func (b *book) settledLocked(a *authRecord, now time.Time) bool {
	return a.CapturedAmount > 0 && a.BusinessDate != "" && b.isClosedLocked(a.BusinessDate, now)
}
