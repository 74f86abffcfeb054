package banksim

import (
	"context"
	"strconv"
	"sync"
	"time"

	"storepay/gateway/iso8583"
)

// isoBook is what the ISO 8583 switch keeps beside the ledger: the
// answer of every RRN it processed (the duplicate rule) and the messages
// a later field 90 may name.
type isoBook struct {
	mu    sync.Mutex // guards the fields below; taken after Sim.book.mu, never before
	byRRN map[rrnKey]*rrnEntry
	orig  map[origKey]isoTarget
}

// rrnKey scopes an RRN to its terminal.
type rrnKey struct{ terminal, rrn string }

// rrnEntry is an RRN's first answer; done is closed once it is known.
type rrnEntry struct {
	done           chan struct{}
	code, authCode string
	released       bool // its work panicked: no answer
}

// origKey is what field 90 names: a terminal's message by MTI (its first
// sending's), STAN and field 7.
type origKey struct{ terminal, mti, stan, time string }

// isoTarget is what a message named in field 90 did.
type isoTarget struct {
	auth       *authRecord   // the authorization it made or captured
	completion bool          // it is the 0220 that captured auth
	refund     *refundRecord // it is a refund
}

func (b *isoBook) init() {
	b.byRRN = map[rrnKey]*rrnEntry{}
	b.orig = map[origKey]isoTarget{}
}

func (b *isoBook) reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.init()
}

// once does the work of an RRN at most once per terminal: a repeat gets
// the first answer, waiting for it while the first is still being
// processed. ok is false when the wait ended with ctx or done.
func (b *isoBook) once(ctx context.Context, done <-chan struct{}, terminal, rrn string, work func() (string, string)) (code, authCode string, ok bool) {
	k := rrnKey{terminal, rrn}
	b.mu.Lock()
	e := b.byRRN[k]
	if e == nil {
		e = &rrnEntry{done: make(chan struct{})}
		b.byRRN[k] = e
		b.mu.Unlock()
		finished := false
		defer func() {
			if !finished { // the work panicked: let a repeat do it
				b.mu.Lock()
				e.released = true
				if b.byRRN[k] == e {
					delete(b.byRRN, k)
				}
				b.mu.Unlock()
				close(e.done)
			}
		}()
		e.code, e.authCode = work()
		finished = true
		close(e.done)
		return e.code, e.authCode, true
	}
	b.mu.Unlock()
	select {
	case <-e.done:
	case <-ctx.Done():
		return "", "", false
	case <-done:
		return "", "", false
	}
	if e.released {
		return "", "", false
	}
	return e.code, e.authCode, true
}

func (b *isoBook) target(k origKey) (isoTarget, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	t, ok := b.orig[k]
	return t, ok
}

func (b *isoBook) index(k origKey, t isoTarget) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.orig[k] = t
}

// keyOf is the origKey of a message the switch received.
func keyOf(f iso8583.Fields) origKey {
	return origKey{f.TerminalID, iso8583.FirstMTI(f.MTI), f.STAN, f.TransmissionTime}
}

// isoOperation does the work of a new RRN and returns its response code
// and authorization code.
func (s *Sim) isoOperation(f iso8583.Fields) (code, authCode string) {
	amount, err := strconv.ParseInt(f.Amount, 10, 64)
	if err != nil || amount <= 0 {
		return iso8583.CodeInvalidAmount, ""
	}
	currency, ok := iso8583.CurrencyAlpha(f.Currency)
	if !ok {
		return iso8583.CodeFormatError, ""
	}
	switch f.MTI {
	case iso8583.MTIAuthorization:
		if f.ProcessingCode != iso8583.ProcessingPurchase {
			return iso8583.CodeInvalidTransaction, ""
		}
		return s.isoAuthorize(f, amount, currency, false, false)
	case iso8583.MTIFinancial:
		switch f.ProcessingCode {
		case iso8583.ProcessingPurchase:
			return s.isoAuthorize(f, amount, currency, true, false)
		case iso8583.ProcessingRefund:
			return s.isoRefund(f, amount, currency)
		}
		return iso8583.CodeInvalidTransaction, ""
	case iso8583.MTIAdvice, iso8583.MTIAdviceRepeat:
		switch {
		case f.ProcessingCode != iso8583.ProcessingPurchase:
			return iso8583.CodeInvalidTransaction, ""
		case f.Original != "":
			return s.isoComplete(f, amount, currency)
		case f.AuthCode == iso8583.AuthCodeOffline:
			return s.isoAuthorize(f, amount, currency, true, true)
		}
		return iso8583.CodeFormatError, "" // neither a completion nor an offline advice
	case iso8583.MTIReversal, iso8583.MTIReversalRepeat:
		return s.isoReverse(f)
	}
	return iso8583.CodeInvalidTransaction, ""
}

// isoAuthorize authorizes (0100), sells (0200) or takes an offline advice
// (0220, 38 = Y3): the protocol's test cards decline with their codes, an
// expired card with 54, a card number failing the Luhn check with 14.
func (s *Sim) isoAuthorize(f iso8583.Fields, amount int64, currency string, capture, stored bool) (string, string) {
	if !validPAN(f.PAN) {
		return iso8583.CodeInvalidCard, ""
	}
	if len(f.Expiry) != 4 {
		return iso8583.CodeFormatError, ""
	}
	yy, err1 := strconv.Atoi(f.Expiry[:2])
	mm, err2 := strconv.Atoi(f.Expiry[2:])
	if err1 != nil || err2 != nil || mm < 1 || mm > 12 {
		return iso8583.CodeFormatError, ""
	}
	now := s.now()
	a := &authRecord{apiKey: s.cfg.APIKey, Authorization: Authorization{
		ID:         "auth_" + s.cfg.Rand(),
		MerchantID: f.MerchantID,
		TerminalID: f.TerminalID,
		Amount:     amount,
		Currency:   currency,
		CardLast4:  f.PAN[len(f.PAN)-4:],
		Stored:     stored,
		CreatedAt:  now,
		Protocol:   ProtocolISO8583,
		RRN:        f.RRN,
	}}
	code := iso8583.CodeApproved
	expiry := time.Date(2000+yy, time.Month(mm)+1, 1, 0, 0, 0, 0, time.UTC)
	switch decline, ok := testCards[f.PAN]; {
	case ok:
		a.Status, a.DeclineCode = statusDeclined, decline
		code, _ = iso8583.ResponseCode(decline)
	case !now.Before(expiry):
		a.Status, a.DeclineCode = statusDeclined, "expired_card"
		code = iso8583.CodeExpiredCard
	default:
		a.Status, a.AuthCode = statusApproved, s.cfg.Rand()[:6]
	}

	s.book.mu.Lock()
	defer s.book.mu.Unlock()
	if a.Status == statusApproved && capture {
		a.CapturedAmount, a.CapturedAt, a.CaptureRRN = a.Amount, now, f.RRN
		a.BusinessDate = s.book.businessDateLocked(now, s.cfg.LateCutoff)
	}
	s.book.addLocked(a)
	s.iso.index(keyOf(f), isoTarget{auth: a})
	return code, a.AuthCode
}

// isoComplete captures the pre-authorization field 90 names (0220 with
// 38 = its code): 12 when the bank does not know it, it is not approved,
// already captured, or 38 or the currency differ; 13 above the 20%
// allowance.
func (s *Sim) isoComplete(f iso8583.Fields, amount int64, currency string) (string, string) {
	orig, err := iso8583.ParseOriginal(f.Original)
	if err != nil {
		return iso8583.CodeFormatError, ""
	}
	now := s.now()
	s.book.mu.Lock()
	defer s.book.mu.Unlock()
	t, ok := s.iso.target(origKey{f.TerminalID, iso8583.FirstMTI(orig.MTI), orig.STAN.String(), orig.TransmissionTime})
	switch {
	case !ok || t.auth == nil || t.completion || orig.MTI != iso8583.MTIAuthorization:
		return iso8583.CodeInvalidTransaction, ""
	}
	a := t.auth
	switch {
	case a.Status != statusApproved, a.CapturedAmount > 0, a.AuthCode != f.AuthCode, a.Currency != currency:
		return iso8583.CodeInvalidTransaction, ""
	case amount > a.Amount+a.Amount*20/100:
		return iso8583.CodeInvalidAmount, ""
	}
	a.CapturedAmount, a.CapturedAt, a.CaptureRRN = amount, now, f.RRN
	a.BusinessDate = s.book.businessDateLocked(now, s.cfg.LateCutoff)
	s.iso.index(keyOf(f), isoTarget{auth: a, completion: true})
	return iso8583.CodeApproved, a.AuthCode
}

// isoRefund refunds what the message field 90 names charged (a sale, a
// completion or an offline advice): 12 when the bank does not know it or
// it charged nothing, 13 above what is left to refund.
func (s *Sim) isoRefund(f iso8583.Fields, amount int64, currency string) (string, string) {
	if f.Original == "" {
		return iso8583.CodeFormatError, ""
	}
	orig, err := iso8583.ParseOriginal(f.Original)
	if err != nil {
		return iso8583.CodeFormatError, ""
	}
	now := s.now()
	s.book.mu.Lock()
	defer s.book.mu.Unlock()
	t, ok := s.iso.target(origKey{f.TerminalID, iso8583.FirstMTI(orig.MTI), orig.STAN.String(), orig.TransmissionTime})
	if !ok || t.auth == nil {
		return iso8583.CodeInvalidTransaction, ""
	}
	a := t.auth
	switch {
	case a.Status != statusApproved, a.CapturedAmount <= 0, a.Currency != currency:
		return iso8583.CodeInvalidTransaction, ""
	case a.RefundedAmount+amount > a.CapturedAmount:
		return iso8583.CodeInvalidAmount, ""
	}
	a.RefundedAmount += amount
	r := &refundRecord{apiKey: a.apiKey, Refund: Refund{
		ID:              "rfd_" + s.cfg.Rand(),
		AuthorizationID: a.ID,
		Amount:          amount,
		Currency:        a.Currency,
		CreatedAt:       now,
		BusinessDate:    s.book.businessDateLocked(now, s.cfg.LateCutoff),
		RRN:             f.RRN,
	}}
	s.book.refunds = append(s.book.refunds, r)
	s.iso.index(keyOf(f), isoTarget{auth: a, refund: r})
	return iso8583.CodeApproved, s.cfg.Rand()[:6]
}

// isoReverse undoes the operation field 90 names (0420): an
// authorization, sale or offline advice is reversed, a completion
// uncaptured, a refund taken back. An operation the bank never received,
// or one already undone, is answered 00 and changes nothing; 12 when it
// cannot be undone any more (settled, or refunded since).
func (s *Sim) isoReverse(f iso8583.Fields) (string, string) {
	if f.ResponseCode != iso8583.ReasonCustomerCancellation && f.ResponseCode != iso8583.ReasonNoAnswer {
		return iso8583.CodeFormatError, ""
	}
	orig, err := iso8583.ParseOriginal(f.Original)
	if err != nil {
		return iso8583.CodeFormatError, ""
	}
	now := s.now()
	s.book.mu.Lock()
	defer s.book.mu.Unlock()
	t, ok := s.iso.target(origKey{f.TerminalID, iso8583.FirstMTI(orig.MTI), orig.STAN.String(), orig.TransmissionTime})
	if !ok {
		return iso8583.CodeApproved, "" // never received: nothing to undo
	}
	a := t.auth
	switch {
	case t.refund != nil:
		r := t.refund
		switch {
		case !r.ReversedAt.IsZero():
		case s.book.isClosedLocked(r.BusinessDate, now):
			return iso8583.CodeInvalidTransaction, ""
		default:
			r.ReversedAt = now
			a.RefundedAmount -= r.Amount
		}
	case t.completion:
		switch {
		case a.Status != statusApproved || a.CapturedAmount == 0:
		case s.book.settledLocked(a, now), a.RefundedAmount > 0:
			return iso8583.CodeInvalidTransaction, ""
		default:
			a.CapturedAmount, a.CapturedAt, a.CaptureRRN, a.BusinessDate = 0, time.Time{}, "", ""
		}
	default:
		if a.Status == statusApproved {
			if _, ok := s.checkReversibleLocked(a, now); !ok {
				return iso8583.CodeInvalidTransaction, ""
			}
			a.Status, a.ReversedAt = statusReversed, now
		}
	}
	return iso8583.CodeApproved, ""
}
