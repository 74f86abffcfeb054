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
	// Request is its idempotency: a repeat resumes or returns the payment
	// the first one created.
	Request
	Method          Method
	Amount          int64
	TipAmount       int64
	Capture         *bool // default true: a sale
	Currency        string
	Card            *gateway.Card
	OfflineBehavior OfflineBehavior
}

// Pay takes a payment. Cash is captured at once. A card payment goes
// through the phases of the payment machine, each a transaction that ends
// at a recovery point:
//
//  1. written ahead: (pending, authorize), with its key, its sealed card
//     and this request's lease, before any bank is called;
//  2. the bank called (the router writes the bank down before calling it);
//  3. the outcome committed, with the terminal's answer, before Pay
//     returns.
//
// A crash between two phases leaves the payment at the last recovery
// point, from which the terminal's repeat or the resolver goes on. A
// decline is a payment with status declined, not an error.
//
// Errors: invalid_request (400); invalid_amount, invalid_card,
// expired_card, currency_mismatch, amount_exceeds_balance,
// idempotency_key_reuse (422); order_not_found (404); order_not_open,
// idempotency_key_in_use (409).
func (s *Service) Pay(ctx context.Context, req PayRequest) (Payment, error) {
	if err := s.validatePay(&req); err != nil {
		return Payment{}, err
	}
	now := s.now()
	id := s.newID("pay_")
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
	lease := s.leaseFor(now, s.authBudget())
	var p Payment
	reply := req.Reply
	write := func(tx *sql.Tx) error {
		existing, found, err := paymentByOpKey(tx, req.Key)
		if err != nil {
			return err
		}
		if found {
			return s.repeatPay(tx, &p, existing, req, lease, now)
		}
		o, err := getOrderHead(tx, req.OrderID)
		if err != nil {
			return err
		}
		if err := checkBalance(tx, o, req); err != nil {
			return err
		}
		p = Payment{ID: id, OrderID: o.ID, Method: req.Method, Mode: ModeOnline,
			Amount: req.Amount, TipAmount: req.TipAmount, Currency: o.Currency, Capture: *req.Capture,
			TerminalID: req.TerminalID, opKey: req.Key, opHash: req.Hash, CreatedAt: now, UpdatedAt: now}
		if req.Method == Cash {
			p.Capture = true
			p.AuthorizedAmount = p.Amount + p.TipAmount
			p.CapturedAmount = p.AuthorizedAmount
			return s.transition(tx, &p, move{ev: EvCashTaken, detail: "created", reply: reply}, now)
		}
		p.CardBrand, p.CardLast4 = req.Card.Brand(), req.Card.Last4()
		p.cardBin = req.Card.PAN[:6]
		p.Fingerprint, p.sealed = fingerprint, sealed
		if !decideNow {
			return s.transition(tx, &p, move{ev: EvCardWritten, detail: "created", lease: lease,
				start: &opStart{key: authKey(p.ID), opKey: req.Key, amount: p.Amount, tip: p.TipAmount}}, now)
		}
		// Decided here, in one transaction: stored, or declined by the
		// offline rules. The queue record refers to the payment, which is
		// written once, in its final state, after it (the foreign key is
		// deferred to the commit).
		m, err := s.decideOffline(tx, &p, req.OfflineBehavior, "", now)
		if err != nil {
			return err
		}
		m.detail, m.reply = "created", reply
		return s.transition(tx, &p, m, now)
	}
	if decideNow && reply != nil && Planted(BugAckBeforeDurable) {
		// The planted bug: the answer is made durable first, the payment
		// and its queue record after, in a transaction of their own.
		reply = nil
		if err := s.DB.Update(ctx, func(tx *sql.Tx) error {
			if err := write(tx); err != nil {
				return err
			}
			return errPlantedRollback
		}); !errors.Is(err, errPlantedRollback) {
			return Payment{}, err
		}
		decided := p
		if err := s.DB.Update(ctx, func(tx *sql.Tx) error { return req.Reply.Store(tx, decided) }); err != nil {
			return Payment{}, err
		}
	}
	if err := s.DB.Update(ctx, write); err != nil {
		return Payment{}, err
	}
	if p.PendingOp != OpAuthorize || !s.leased(p, now) {
		return p, nil // decided, or (a repeat) finished already
	}
	return s.authorize(ctx, p, *req.Card, req.OfflineBehavior, req.Reply)
}

// repeatPay answers a request whose key already made a payment: a repeat
// of the same request resumes the authorization where the first left it
// (the first was cut off by a crash or a lost answer) or returns the
// payment; a different request under the key is refused.
func (s *Service) repeatPay(tx *sql.Tx, p *Payment, existing Payment, req PayRequest, lease, now time.Time) error {
	if req.Hash != "" && existing.opHash != req.Hash {
		// Hashes made under one key differ: another request. Else the
		// hashes cannot tell (one was made under another card key, or
		// erased), and the payment itself is compared with the request.
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
		if SameHashKey(existing.opHash, req.Hash) || !same {
			return errReuse
		}
	}
	*p = existing
	if p.PendingOp != OpAuthorize {
		return nil
	}
	if s.leased(*p, now) {
		return errKeyInUse
	}
	// The first attempt of this request was cut off. If it reached a
	// bank, only a same-key retry there may be sent.
	return s.claim(tx, p, lease)
}

// checkBalance refuses a payment its order cannot take.
func checkBalance(tx *sql.Tx, o Order, req PayRequest) error {
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
	return nil
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

func (s *Service) authRequest(p Payment, card gateway.Card) gateway.AuthRequest {
	return gateway.AuthRequest{Key: authKey(p.ID), TerminalID: p.TerminalID, Reference: p.ID,
		Amount: p.Amount + p.TipAmount, Currency: p.Currency, Capture: p.Capture, Card: card}
}

// authorize makes the online decision for a written-ahead payment whose
// lease this request holds, and records it.
func (s *Service) authorize(ctx context.Context, p Payment, card gateway.Card, behavior OfflineBehavior, reply Reply) (Payment, error) {
	// A terminal that hangs up must not cut a payment in half: the call
	// runs to its own budget, and the outcome is recorded either way.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.authBudget())
	defer cancel()
	defer s.letGo(p.leaseOwner, p.leaseUntil)
	req := s.authRequest(p, card)
	var (
		auth gateway.Authorization
		bank = p.Gateway
		err  error
	)
	switch {
	case behavior == ForceOffline && p.Gateway == "":
		err = &gateway.Error{Kind: gateway.KindUnavailable, Err: errors.New("force_offline: no bank asked")}
	case p.Gateway != "" && s.stale(p):
		// Resumed long after: the bank may have forgotten the key, and
		// only its records can say what it did; the resolver asks them.
		err = &gateway.Error{Kind: gateway.KindUnknown, Gateway: bank, Err: errors.New("resumed after its key may be gone at the bank")}
	case p.Gateway != "":
		// Resumed after a crash: the request may have reached this bank.
		auth, err = s.Bank.AuthorizeAt(ctx, bank, req)
		err = unresolved(err, bank)
	default:
		auth, bank, err = s.Bank.Authorize(ctx, req, "", func(b string) error { return s.pin(ctx, p.ID, p.leaseOwner, b) })
	}
	return s.recordAuth(ctx, p.ID, p.leaseOwner, behavior, auth, bank, err, reply)
}

// pin records, before a bank is called, which bank may come to hold the
// payment, so that recovery after a crash knows where to look.
func (s *Service) pin(ctx context.Context, id, token, bank string) error {
	return s.DB.Update(ctx, func(tx *sql.Tx) error {
		p, err := getPayment(tx, id)
		if err != nil {
			return err
		}
		if p.PendingOp != OpAuthorize || !holds(p, token) {
			return fmt.Errorf("payment %s: %w", id, errLeaseLost)
		}
		p.Gateway = bank
		return s.transition(tx, &p, move{ev: EvBankChosen, detail: bank}, s.now())
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

// recordAuth commits the outcome of an authorization a terminal waits
// for: the bank's answer, or, when no bank gave one, the offline
// decision: stored if the rules allow it, else declined (and any
// approval the bank may hold is reversed later). reply stores the
// terminal's answer in the same transaction.
func (s *Service) recordAuth(ctx context.Context, id, token string, behavior OfflineBehavior, auth gateway.Authorization, bank string, callErr error, reply Reply) (Payment, error) {
	now := s.now()
	var p Payment
	lost := false
	// Recorded even when ctx, the payment's budget, has just run out: the
	// decision must reach the disk and the terminal.
	err := s.DB.Update(context.WithoutCancel(ctx), func(tx *sql.Tx) error {
		var err error
		if p, err = getPayment(tx, id); err != nil {
			return err
		}
		if p.PendingOp != OpAuthorize {
			return nil // resolved meanwhile
		}
		if lost = !holds(p, token); lost {
			return nil
		}
		callErr = definite(auth, bank, callErr)
		var m move
		if m, err = s.authAnswer(&p, auth, bank, callErr); err == nil && m.ev == "" {
			pinned := ""
			if !gateway.NothingDone(callErr) {
				pinned = bank
			}
			p.noteError(callErr)
			m, err = s.decideOffline(tx, &p, behavior, pinned, now)
		}
		if err != nil {
			return err
		}
		m.reply = reply
		return s.transition(tx, &p, m, now)
	})
	if err != nil {
		return Payment{}, err
	}
	if lost {
		return Payment{}, errLeaseLost
	}
	s.decided(ctx, p)
	return p, nil
}

func (s *Service) decided(ctx context.Context, p Payment) {
	s.log().InfoContext(ctx, "payment decided", "payment_id", p.ID, "status", p.Status, "mode", p.Mode,
		"gateway", p.Gateway, "decline_code", p.DeclineCode, "pending_op", p.PendingOp)
	paymentsDecided.Add(ctx, 1, statusAttrs(p))
}

// definite turns an answer that is neither an approval nor a decline
// into an unknown outcome: it proves nothing about what the bank did.
func definite(auth gateway.Authorization, bank string, err error) error {
	if err == nil && auth.Status != gateway.StatusApproved && auth.Status != gateway.StatusDeclined {
		return &gateway.Error{Kind: gateway.KindUnknown, Gateway: bank,
			Err: fmt.Errorf("authorization %s answered with status %q", auth.ID, auth.Status)}
	}
	return err
}

// authAnswer reads a bank's definitive answer to an authorization into p
// and returns the move it makes; a zero move when the call gave no
// definitive answer.
func (s *Service) authAnswer(p *Payment, auth gateway.Authorization, bank string, callErr error) (move, error) {
	e := gateway.AsError(callErr)
	switch {
	case callErr == nil:
		p.Gateway, p.BankAuthID = bank, auth.ID
		switch auth.Status {
		case gateway.StatusApproved:
			p.AuthCode, p.AuthorizedAmount, p.CapturedAmount = auth.AuthCode, auth.Amount, auth.CapturedAmount
			p.DeclineCode = ""
			p.noteError(nil)
			if p.Capture {
				return move{ev: EvApprovedSale}, nil
			}
			return move{ev: EvApprovedPreauth}, nil
		case gateway.StatusDeclined:
			p.DeclineCode = auth.DeclineCode
			if p.DeclineCode == "" {
				p.DeclineCode = "do_not_honor"
			}
			return move{ev: EvDeclined, detail: p.DeclineCode}, nil
		}
		return move{}, fmt.Errorf("authorization %s of payment %s answered %q", auth.ID, p.ID, auth.Status)
	case e != nil && e.Kind == gateway.KindRejected:
		p.Gateway = bank
		p.DeclineCode = rejectedCode(e)
		return move{ev: EvDeclined, detail: p.DeclineCode}, nil
	}
	return move{}, nil
}

func rejectedCode(e *gateway.Error) string {
	if e.Code != "" {
		return e.Code
	}
	return "rejected_by_bank"
}

// decideOffline decides a payment that no bank decided while its terminal
// waits, and returns the move. pinned is the bank where the outcome is
// unknown ("" when every bank provably did nothing).
func (s *Service) decideOffline(tx *sql.Tx, p *Payment, behavior OfflineBehavior, pinned string, now time.Time) (move, error) {
	decline := func(code string) move {
		p.DeclineCode = code
		if pinned != "" {
			// The bank may have approved what the terminal now hears as
			// declined: the resolver looks and reverses any approval.
			p.Gateway = pinned
			return move{ev: EvDeclinedUnknown, detail: code,
				start: &opStart{key: undoKey(p.ID), amount: p.Amount, tip: p.TipAmount}}
		}
		p.Gateway = "" // every bank tried provably did nothing: none decided it
		return move{ev: EvDeclinedOffline, detail: code}
	}
	if s.Offline == nil || behavior == RequireOnline {
		return decline("bank_unavailable"), nil
	}
	// A record pinned to a bank repeats the very request that bank may
	// hold, under its key. An unpinned one was never taken by any bank
	// (each said so), and is forwarded as a stored advice under its own.
	key := authKey(p.ID)
	if pinned == "" {
		key = storedAdviceKey(p.ID)
	}
	err := s.Offline.Admit(tx, OfflineRecord{PaymentID: p.ID, TerminalID: p.TerminalID, Gateway: pinned,
		Key: key, Amount: p.Amount + p.TipAmount, Currency: p.Currency, Capture: p.Capture,
		Fingerprint: p.Fingerprint, Bin: p.cardBin, Last4: p.CardLast4, Sealed: p.sealed, CreatedAt: now})
	if de := AsError(err); de != nil {
		// Refused by the offline rules: decided offline, without a bank.
		p.Mode = ModeOffline
		return decline(de.Code), nil
	}
	if err != nil {
		return move{}, err
	}
	p.Mode, p.Gateway = ModeOffline, pinned
	return move{ev: EvStoredOffline, detail: "stored offline"}, nil
}

// backoff schedules the next resolution attempt: exponential, capped at
// five minutes, so a bank that is down is not hammered. A bank that sent
// nothing and said when it takes calls again (its breaker's remaining
// delay, a 429's Retry-After) is tried then, without counting an attempt;
// a bank that recovers sooner makes its payments due at once (see
// [Service.RunResolver]).
func (s *Service) backoff(p *Payment, now time.Time, err error) {
	p.noteError(err)
	if e := gateway.AsError(err); e != nil && e.RetryAfter > 0 && gateway.NothingDone(err) {
		p.resolveAfter = now.Add(e.RetryAfter + time.Duration(s.jitter(int64(e.RetryAfter/10))))
		return
	}
	p.resolveAttempts++
	d := time.Second << min(p.resolveAttempts, 9)
	d = min(d, 5*time.Minute)
	p.resolveAfter = now.Add(d/2 + time.Duration(s.jitter(int64(d/2))))
}
