package orders

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"storepay/gateway"
)

// OfflineBehavior says what to do when no bank decides a card payment.
type OfflineBehavior string

// Offline behaviours, as the contract names them.
const (
	PreferOnline  OfflineBehavior = "prefer_online"
	RequireOnline OfflineBehavior = "require_online"
	ForceOffline  OfflineBehavior = "force_offline"
)

// PayRequest is a request to pay (part of) an order.
type PayRequest struct {
	OrderID    string
	TerminalID string
	// OpKey identifies the request (device and Idempotency-Key). A repeat
	// resumes or returns the payment the first one created; OpHash (a
	// hash of the request) tells a repeat from a reuse of the key.
	OpKey           string
	OpHash          string
	Method          Method
	Amount          int64
	TipAmount       int64
	Capture         *bool // default true: a sale
	Currency        string
	Card            *gateway.Card
	OfflineBehavior OfflineBehavior
}

// Pay takes a payment. Cash is captured at once. A card payment is
// written ahead, sent to a bank, and its outcome committed before Pay
// returns; a decline is a payment with status declined, not an error.
//
// Errors: invalid_request (400); invalid_amount, invalid_card,
// expired_card, currency_mismatch, amount_exceeds_balance (422);
// order_not_found (404); order_not_open (cancelled), payment_in_progress
// (409).
func (s *Service) Pay(ctx context.Context, req PayRequest) (Payment, error) {
	if err := s.validatePay(&req); err != nil {
		return Payment{}, err
	}
	now := s.now()
	// Own the new payment before its intent is committed, so that the
	// resolver never mistakes it for one left behind by a crash.
	id := newID("pay_")
	s.own(id)
	defer s.release(id)
	var p Payment
	resume := false
	// With no bank taking traffic (every breaker open), a payment that may
	// go offline is decided here, in one transaction, without a bank call
	// that cannot happen.
	decideNow := req.Method == Card && s.Offline != nil &&
		(req.OfflineBehavior == ForceOffline || (req.OfflineBehavior == PreferOnline && s.Bank.Preferred() == ""))
	// The card is sealed before the write: the writer is shared by every
	// terminal, so nothing that can run outside it runs inside.
	var fingerprint string
	var sealed []byte
	if req.Method == Card {
		fingerprint = s.Vault.Fingerprint(req.Card.PAN)
		var err error
		if sealed, err = s.Vault.Seal(id, *req.Card); err != nil {
			return Payment{}, fmt.Errorf("seal card: %w", err)
		}
	}
	err := s.DB.Update(ctx, func(tx *sql.Tx) error {
		existing, found, err := paymentByOpKey(tx, req.OpKey)
		if found && req.OpHash != "" && existing.opHash != req.OpHash {
			// Hashes made under one key differ: another request. Else the
			// stored one cannot tell (erased, or made under another card
			// key), and the payment itself is compared with the request.
			// The amount and tip asked; a pre-authorization's capture may
			// since have changed them, its authorized total not. The card
			// by its last four digits (its fingerprint changes with the
			// card key).
			same := existing.OrderID == req.OrderID && existing.Method == req.Method &&
				(existing.Amount == req.Amount && existing.TipAmount == req.TipAmount ||
					!existing.Capture && existing.AuthorizedAmount == req.Amount+req.TipAmount)
			if req.Method == Card {
				same = same && existing.Capture == *req.Capture && existing.CardLast4 == req.Card.Last4()
			}
			if SameHashKey(existing.opHash, req.OpHash) || !same {
				return errReuse
			}
		}
		if err != nil || found {
			p, resume = existing, found
			return err
		}
		o, err := getOrderHead(tx, req.OrderID)
		if err != nil {
			return err
		}
		switch o.Status {
		case OrderOpen:
		case OrderPaid, OrderDelivered:
			// Fully paid: its open balance is 0, and the contract answers a
			// payment beyond the open balance with amount_exceeds_balance.
			return errf(KindInvalid, "amount_exceeds_balance", "order %s is %s: its open balance is 0", o.ID, o.Status)
		default:
			return errf(KindConflict, "order_not_open", "order %s is %s; it takes no more payments", o.ID, o.Status)
		}
		if req.Currency != "" && req.Currency != o.Currency {
			return errf(KindInvalid, "currency_mismatch", "payment currency %q differs from the order's %s", req.Currency, o.Currency)
		}
		balance, err := openBalance(tx, o)
		if err != nil {
			return err
		}
		if req.Amount > balance {
			return errf(KindInvalid, "amount_exceeds_balance", "amount %d exceeds the order's open balance %d", req.Amount, balance)
		}
		p = Payment{ID: id, OrderID: o.ID, Method: req.Method, Mode: ModeOnline,
			Amount: req.Amount, TipAmount: req.TipAmount, Currency: o.Currency, Capture: *req.Capture,
			TerminalID: req.TerminalID, opKey: req.OpKey, opHash: req.OpHash, CreatedAt: now, UpdatedAt: now}
		if req.Method == Cash {
			p.Status, p.Capture = Captured, true
			p.AuthorizedAmount = p.Amount + p.TipAmount
			p.CapturedAmount, p.CapturedAt = p.AuthorizedAmount, now
			if err := insertPayment(tx, p); err != nil {
				return err
			}
			if _, err = settle(tx, o, now); err != nil {
				return err
			}
			return finish(ctx, tx, p)
		}
		p.Status = Pending
		p.CardBrand, p.CardLast4 = req.Card.Brand(), req.Card.Last4()
		p.cardBin = req.Card.PAN[:6]
		p.Fingerprint, p.sealed = fingerprint, sealed
		s.startOp(&p, opAuthorize, p.ID, req.OpKey, p.Amount, p.TipAmount, now)
		if !decideNow {
			return insertPayment(tx, p)
		}
		// Decided here, in one transaction: stored, or declined by the
		// offline rules. The queue record refers to the payment, which is
		// written once, in its final state, after it (the foreign key is
		// deferred to the commit). No PRAGMA here: a flag pragma expires
		// every prepared statement of the connection.
		if err := s.decideOffline(tx, &p, req.OfflineBehavior, "", now); err != nil {
			return err
		}
		if err := insertPayment(tx, p); err != nil {
			return err
		}
		if _, err := settle(tx, o, now); err != nil {
			return err
		}
		return finish(ctx, tx, p)
	})
	if err != nil {
		return Payment{}, err
	}
	if p.Method == Cash || p.PendingOp != opAuthorize {
		return p, nil
	}
	if resume {
		if !s.own(p.ID) {
			return Payment{}, errInProgress
		}
		defer s.release(p.ID)
		// The first attempt of this request was cut off (a crash). If it
		// reached a bank, only a same-key retry there may be sent.
		var cur Payment
		if cur, err = s.Payment(ctx, p.ID); err != nil {
			return Payment{}, err
		}
		if cur.PendingOp != opAuthorize {
			return cur, nil
		}
		p = cur
	}
	return s.authorize(ctx, p, *req.Card, req.OfflineBehavior)
}

func (s *Service) validatePay(req *PayRequest) error {
	if req.Capture == nil {
		t := true
		req.Capture = &t
	}
	if req.OfflineBehavior == "" {
		req.OfflineBehavior = PreferOnline
	}
	switch req.Method {
	case Cash:
		if req.Card != nil {
			return errf(KindBadRequest, "invalid_request", "a cash payment has no card")
		}
	case Card:
		if req.Card == nil {
			return errf(KindBadRequest, "invalid_request", "card is required for method card")
		}
	default:
		return errf(KindBadRequest, "invalid_request", "method must be card or cash")
	}
	switch req.OfflineBehavior {
	case PreferOnline, RequireOnline, ForceOffline:
	default:
		return errf(KindBadRequest, "invalid_request", "offline_behavior must be prefer_online, require_online or force_offline")
	}
	if req.Amount <= 0 {
		return errf(KindInvalid, "invalid_amount", "amount must be at least 1 minor unit")
	}
	if req.Amount > maxAmount {
		// No order's total is larger, so no open balance is either.
		return errf(KindInvalid, "amount_exceeds_balance", "amount %d exceeds the order's open balance (no order's total exceeds %d)", req.Amount, int64(maxAmount))
	}
	if req.TipAmount < 0 || req.TipAmount > maxAmount {
		return errf(KindInvalid, "invalid_amount", "tip_amount must be 0 to %d minor units", int64(maxAmount))
	}
	if req.Currency != "" && !ValidCurrency(req.Currency) {
		return errf(KindInvalid, "currency_mismatch", "currency %q is not an ISO 4217 code", req.Currency)
	}
	if req.Card != nil {
		switch err := req.Card.Validate(s.now()); {
		case errors.Is(err, gateway.ErrExpiredCard):
			return errf(KindInvalid, "expired_card", "the card has expired")
		case err != nil:
			return errf(KindInvalid, "invalid_card", "the card number or expiry is not valid")
		}
	}
	return nil
}

// openBalance is what is left to pay on an order: payments in flight hold
// their share, so that two terminals cannot both pay the remainder.
func openBalance(tx *sql.Tx, o Order) (int64, error) {
	var held int64
	err := tx.QueryRow(`SELECT coalesce(sum(amount), 0) FROM payments WHERE order_id = ? AND status IN `+reservingStatuses, o.ID).Scan(&held)
	return o.TotalAmount - held, err
}

func (s *Service) startOp(p *Payment, op, key, opKey string, amount, tip int64, now time.Time) {
	p.PendingOp, p.pendingKey, p.pendingOpKey, p.keyOp = op, key, opKey, op
	p.pendingAmount, p.pendingTip = amount, tip
	p.pendingSince, p.resolveAttempts, p.resolveAfter = now, 0, time.Time{}
	p.LastError = ""
}

// clearOp ends the pending operation. pendingOpKey stays: a repeat of
// the request that finished it is recognised and answered with the result.
func (p *Payment) clearOp() {
	p.PendingOp, p.pendingKey = "", ""
	p.pendingAmount, p.pendingTip = 0, 0
	p.pendingSince, p.resolveAttempts, p.resolveAfter = time.Time{}, 0, time.Time{}
}

func (s *Service) authRequest(p Payment, card gateway.Card) gateway.AuthRequest {
	return gateway.AuthRequest{Key: p.ID, TerminalID: p.TerminalID, Reference: p.ID,
		Amount: p.Amount + p.TipAmount, Currency: p.Currency, Capture: p.Capture, Card: card}
}

// authorize makes the online decision for a written-ahead payment that
// this goroutine owns, and records it.
func (s *Service) authorize(ctx context.Context, p Payment, card gateway.Card, behavior OfflineBehavior) (Payment, error) {
	// A terminal that hangs up must not cut a payment in half: the call
	// runs to its own budget, and the outcome is recorded either way.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.authBudget())
	defer cancel()
	req := s.authRequest(p, card)
	var (
		auth gateway.Authorization
		bank = p.Gateway
		err  error
	)
	switch {
	case behavior == ForceOffline && p.Gateway == "":
		err = &gateway.Error{Kind: gateway.KindUnavailable, Err: errors.New("force_offline: no bank asked")}
	case p.Gateway != "":
		// Resumed after a crash: the request may have reached this bank.
		auth, err = s.Bank.AuthorizeAt(ctx, bank, req)
		err = unresolved(err, bank)
	default:
		auth, bank, err = s.Bank.Authorize(ctx, req, "", func(b string) error { return s.pin(ctx, p.ID, b) })
	}
	return s.recordAuth(ctx, p.ID, behavior, auth, bank, err, false)
}

// pin records, before a bank is called, which bank may come to hold the
// payment, so that recovery after a crash knows where to look.
func (s *Service) pin(ctx context.Context, id, bank string) error {
	return s.DB.Update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE payments SET gateway = ? WHERE id = ? AND pending_op = ?`, bank, id, opAuthorize)
		return err
	})
}

// unresolved turns a "nothing done" answer to a same-key retry into an
// unknown outcome: the retry did nothing, but the request it repeats may
// have been processed. Only a bank's answer (success or a 4xx rejection)
// resolves it.
func unresolved(err error, bank string) error {
	e := gateway.AsError(err)
	if err == nil || (e != nil && e.Kind == gateway.KindRejected) {
		return err
	}
	return &gateway.Error{Kind: gateway.KindUnknown, Gateway: bank, Err: err}
}

// recordAuth commits the outcome of an authorization. When resolving
// (the resolver, no terminal waiting) an unresolved outcome only schedules
// another attempt; for a live request it decides now: stored offline if
// allowed, else declined (and any approval the bank may hold is reversed
// later).
func (s *Service) recordAuth(ctx context.Context, id string, behavior OfflineBehavior, auth gateway.Authorization, bank string, callErr error, resolving bool) (Payment, error) {
	now := s.now()
	var p Payment
	// Recorded even when ctx, the payment's budget, has just run out: the
	// decision must reach the disk and the terminal.
	err := s.DB.Update(context.WithoutCancel(ctx), func(tx *sql.Tx) error {
		var err error
		if p, err = getPayment(tx, id); err != nil {
			return err
		}
		if p.PendingOp != opAuthorize {
			return nil // resolved meanwhile
		}
		from := p.Status
		e := gateway.AsError(callErr)
		switch {
		case callErr == nil:
			p.Gateway = bank
			s.adopt(&p, auth)
			p.clearOp()
		case e != nil && e.Kind == gateway.KindRejected:
			p.Gateway = bank
			p.Status, p.DeclineCode = Declined, rejectedCode(e)
			p.sealed = nil
			p.clearOp()
		case resolving:
			p.LastError = callErr.Error()
			s.backoff(&p, now, callErr)
		default:
			pinned := ""
			if !gateway.NothingDone(callErr) {
				pinned = bank
			}
			p.LastError = callErr.Error()
			if err := s.decideOffline(tx, &p, behavior, pinned, now); err != nil {
				return err
			}
		}
		if err := save(tx, &p, from, p.DeclineCode, now); err != nil {
			return err
		}
		if _, err = settleOrder(tx, p.OrderID, now); err != nil {
			return err
		}
		if resolving {
			return nil
		}
		return finish(ctx, tx, p)
	})
	if err != nil {
		return Payment{}, err
	}
	s.log().Info("payment decided", "payment_id", p.ID, "status", p.Status, "mode", p.Mode,
		"gateway", p.Gateway, "decline_code", p.DeclineCode, "pending_op", p.PendingOp)
	paymentsDecided.Add(ctx, 1, statusAttrs(p))
	return p, nil
}

// adopt applies a bank's definitive answer to an authorization.
func (s *Service) adopt(p *Payment, auth gateway.Authorization) {
	p.BankAuthID = auth.ID
	p.sealed = nil
	switch auth.Status {
	case gateway.StatusApproved:
		p.AuthCode, p.AuthorizedAmount, p.CapturedAmount = auth.AuthCode, auth.Amount, auth.CapturedAmount
		p.DeclineCode = ""
		if p.Capture {
			p.Status = Captured
		} else {
			p.Status = Authorized
		}
	default:
		p.Status, p.DeclineCode = Declined, auth.DeclineCode
		if p.DeclineCode == "" {
			p.DeclineCode = "do_not_honor"
		}
	}
}

func rejectedCode(e *gateway.Error) string {
	if e.Code != "" {
		return e.Code
	}
	return "rejected_by_bank"
}

// decideOffline decides a payment that no bank decided. pinned is the bank
// where the outcome is unknown ("" when every bank provably did nothing).
func (s *Service) decideOffline(tx *sql.Tx, p *Payment, behavior OfflineBehavior, pinned string, now time.Time) error {
	decline := func(code string) {
		p.Status, p.DeclineCode = Declined, code
		if pinned != "" {
			// The bank may have approved what the terminal now hears as
			// declined: the resolver repeats the request with the same key
			// and reverses any approval.
			p.Gateway = pinned
			s.startOp(p, opReverse, p.ID, "", p.Amount, p.TipAmount, now)
			return
		}
		p.Gateway = "" // every bank tried provably did nothing: none decided it
		p.sealed = nil
		p.clearOp()
	}
	if s.Offline == nil || behavior == RequireOnline {
		decline("bank_unavailable")
		return nil
	}
	// A record pinned to a bank repeats the very request that bank may
	// hold, under its key. An unpinned one was never taken by any bank
	// (each said so), and is forwarded as a stored advice: another body,
	// so another key, or a bank that kept the first key (with the answer
	// "not processed") would refuse the advice as a reused key.
	key := p.ID
	if pinned == "" {
		key = p.ID + ":stored"
	}
	err := s.Offline.Admit(tx, OfflineRecord{PaymentID: p.ID, TerminalID: p.TerminalID, Gateway: pinned,
		Key: key, Amount: p.Amount + p.TipAmount, Currency: p.Currency, Capture: p.Capture,
		Fingerprint: p.Fingerprint, Bin: p.cardBin, Last4: p.CardLast4, Sealed: p.sealed, CreatedAt: now})
	if de := AsError(err); de != nil {
		// Refused by the offline rules: decided offline, without a bank.
		decline(de.Code)
		p.Mode = ModeOffline
		return nil
	}
	if err != nil {
		return err
	}
	p.Status, p.Mode, p.Gateway = Stored, ModeOffline, pinned
	p.sealed = nil // the queue holds its own sealed copy
	p.clearOp()
	return nil
}

// voidStored takes a stored payment out of the queue. One pinned to a
// bank, where a request for it has an unknown outcome, may be approved
// there: it is voided at once, and the resolver reverses whatever that
// bank holds under the payment's reference, as for an unknown outcome the
// terminal heard as declined.
func (s *Service) voidStored(tx *sql.Tx, p *Payment, now time.Time) error {
	if s.Offline == nil {
		return errf(KindConflict, "payment_not_voidable", "store-and-forward is not running")
	}
	pinned, err := s.Offline.Cancel(tx, p.ID, now)
	if err != nil {
		return err
	}
	from := p.Status
	p.Status = Voided
	detail := "voided before forwarding"
	if pinned != "" {
		p.Gateway = pinned
		s.startOp(p, opReverse, p.ID, "", p.Amount, p.TipAmount, now)
		detail = "voided before forwarding; any approval at " + pinned + " is reversed"
	}
	return save(tx, p, from, detail, now)
}

// backoff schedules the next resolution attempt: exponential, capped at
// five minutes, so a bank that is down is not hammered. A bank that sent
// nothing and said when it takes calls again (its breaker's remaining
// delay, a 429's Retry-After) is tried then, without counting an attempt;
// a bank that recovers sooner makes its payments due at once (see
// [Service.RunResolver]).
func (s *Service) backoff(p *Payment, now time.Time, err error) {
	if e := gateway.AsError(err); e != nil && e.RetryAfter > 0 && gateway.NothingDone(err) {
		p.resolveAfter = now.Add(e.RetryAfter + time.Duration(jitter(int64(e.RetryAfter/10))))
		return
	}
	p.resolveAttempts++
	d := time.Second << min(p.resolveAttempts, 9)
	d = min(d, 5*time.Minute)
	p.resolveAfter = now.Add(d/2 + time.Duration(jitter(int64(d/2))))
}
