package orders

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"storepay/gateway"
)

// CaptureRequest captures an authorized payment.
type CaptureRequest struct {
	PaymentID string
	OpKey     string
	// Amount is the part of the order this payment covers; default the
	// authorized amount. The bank captures Amount + TipAmount.
	Amount    *int64
	TipAmount int64
}

// Capture captures an authorized payment, with an optional tip. Errors:
// payment_not_found (404); payment_not_authorized, payment_in_progress
// (409); invalid_amount, amount_exceeds_authorization,
// capture_exceeds_authorization and bank rejections (422);
// bank_unavailable (503).
func (s *Service) Capture(ctx context.Context, req CaptureRequest) (Payment, error) {
	sameAs := func(_ *sql.Tx, p *Payment) (bool, error) {
		amount := p.Amount // authorized while pending, captured once done
		if req.Amount != nil {
			amount = *req.Amount
		}
		if p.PendingOp == "" {
			// keyOp is empty on rows older than it: the status tells then.
			return (p.keyOp == opCapture || p.keyOp == "" && p.Status != Authorized) &&
				p.Amount == amount && p.TipAmount == req.TipAmount, nil
		}
		return p.PendingOp == opCapture && p.pendingAmount == amount && p.pendingTip == req.TipAmount, nil
	}
	return s.startBankOp(ctx, req.PaymentID, req.OpKey, sameAs, func(tx *sql.Tx, p *Payment, now time.Time) (bool, error) {
		if p.Status != Authorized {
			return false, errf(KindConflict, "payment_not_authorized", "payment %s is %s; only an authorized payment can be captured", p.ID, p.Status)
		}
		amount := p.Amount
		if req.Amount != nil {
			amount = *req.Amount
		}
		if amount <= 0 || req.TipAmount < 0 || req.TipAmount > maxAmount {
			return false, errf(KindInvalid, "invalid_amount", "amount must be positive and tip_amount not negative")
		}
		if amount > p.Amount {
			return false, errf(KindInvalid, "amount_exceeds_authorization", "amount %d exceeds the authorized %d", amount, p.Amount)
		}
		// The acquirer lets a capture exceed the authorization by 20% (tips).
		if (amount+req.TipAmount)*5 > p.AuthorizedAmount*6 {
			return false, errf(KindInvalid, "capture_exceeds_authorization",
				"amount + tip_amount %d exceeds 120%% of the authorized %d", amount+req.TipAmount, p.AuthorizedAmount)
		}
		// The downstream key names the amount: a capture the bank refused
		// (nothing done) may be asked again for another amount, which
		// under the same key the bank would refuse as a reused key. Two
		// captures cannot both succeed: the bank answers already_captured,
		// and a capture whose outcome is unknown is finished under its own
		// key before another can start.
		s.startOp(p, opCapture, fmt.Sprintf("%s:capture:%d", p.ID, amount+req.TipAmount), req.OpKey, amount, req.TipAmount, now)
		return true, nil
	})
}

// Void cancels a payment before it settles: a cash payment is handed
// back, a stored one leaves the queue, a card payment is reversed at its
// bank. Voiding a voided payment is a no-op. Errors: payment_not_found
// (404); payment_not_voidable, payment_settled, payment_in_progress (409);
// bank_unavailable (503).
func (s *Service) Void(ctx context.Context, id, opKey string) (Payment, error) {
	sameAs := func(_ *sql.Tx, p *Payment) (bool, error) {
		return p.PendingOp == opVoid || p.PendingOp == "" && (p.keyOp == opVoid || p.keyOp == "" && p.Status == Voided), nil
	}
	return s.startBankOp(ctx, id, opKey, sameAs, func(tx *sql.Tx, p *Payment, now time.Time) (bool, error) {
		from := p.Status
		switch {
		case p.Status == Voided:
			return false, nil
		case p.Status == Stored:
			return false, s.voidStored(tx, p, now)
		case p.Method == Cash && p.Status == Captured:
			p.Status = Voided
			return false, save(tx, p, from, "cash handed back", now)
		case p.Method == Card && (p.Status == Authorized || p.Status == Captured):
			s.startOp(p, opVoid, p.ID+":void", opKey, 0, 0, now)
			return true, nil
		}
		return false, errf(KindConflict, "payment_not_voidable", "payment %s is %s and cannot be voided", p.ID, p.Status)
	})
}

// Refund refunds part or all of a captured payment. Errors:
// payment_not_found (404); payment_not_captured, payment_in_progress
// (409); invalid_amount, refund_exceeds_capture (422); bank_unavailable
// (503).
func (s *Service) Refund(ctx context.Context, id, opKey string, amount int64) (Payment, error) {
	sameAs := func(tx *sql.Tx, p *Payment) (bool, error) {
		if p.PendingOp != "" {
			return p.PendingOp == opRefund && p.pendingAmount == amount, nil
		}
		if p.keyOp != "" && p.keyOp != opRefund {
			return false, nil
		}
		var made int64
		err := tx.QueryRow(`SELECT amount FROM refunds WHERE op_key = ? AND payment_id = ?`, opKey, p.ID).Scan(&made)
		if errors.Is(err, sql.ErrNoRows) {
			return false, nil
		}
		return made == amount, err
	}
	return s.startBankOp(ctx, id, opKey, sameAs, func(tx *sql.Tx, p *Payment, now time.Time) (bool, error) {
		if opKey != "" {
			// A repeat of a refund already made (its stored answer pruned,
			// or never stored) refunds nothing more; one that failed is
			// tried again under the same key.
			var status, paymentID string
			err := tx.QueryRow(`SELECT status, payment_id FROM refunds WHERE op_key = ?`, opKey).Scan(&status, &paymentID)
			switch {
			case err == nil && paymentID != p.ID:
				return false, errReuse
			case err == nil && status != "failed":
				return false, nil
			case err == nil:
				if _, err := tx.Exec(`UPDATE refunds SET op_key = NULL WHERE op_key = ?`, opKey); err != nil {
					return false, err
				}
			case !errors.Is(err, sql.ErrNoRows):
				return false, err
			}
		}
		if p.Status != Captured && p.Status != PartiallyRefunded {
			return false, errf(KindConflict, "payment_not_captured", "payment %s is %s; only a captured payment can be refunded", p.ID, p.Status)
		}
		if amount <= 0 {
			return false, errf(KindInvalid, "invalid_amount", "a refund amount must be positive")
		}
		if left := p.CapturedAmount - p.RefundedAmount; amount > left {
			return false, errf(KindInvalid, "refund_exceeds_capture", "amount %d exceeds the %d captured and not yet refunded", amount, left)
		}
		r := Refund{ID: newID("rfd_"), PaymentID: p.ID, Amount: amount, Status: "pending", CreatedAt: now}
		if p.Method == Cash {
			r.Status = "refunded"
		}
		if _, err := tx.Exec(`INSERT INTO refunds (id, payment_id, amount, status, op_key, created_at, updated_at)
			VALUES (?,?,?,?,?,?,?)`, r.ID, p.ID, amount, r.Status, nullable(opKey), ts(now), ts(now)); err != nil {
			return false, err
		}
		if p.Method == Cash {
			from := p.Status
			applyRefund(p, amount)
			p.pendingOpKey, p.keyOp = opKey, opRefund
			return false, save(tx, p, from, "cash refund "+r.ID, now)
		}
		s.startOp(p, opRefund, r.ID, opKey, amount, 0, now)
		return true, nil
	})
}

func applyRefund(p *Payment, amount int64) {
	p.RefundedAmount += amount
	if p.RefundedAmount >= p.CapturedAmount {
		p.Status = Refunded
	} else {
		p.Status = PartiallyRefunded
	}
}

// startBankOp writes an operation ahead (prepare decides, inside the
// write transaction, whether there is a bank call to make) and runs it.
// A repeat of the request that started or finished the current operation
// resumes it or returns its result. A request under the key of a pending
// operation that asks for something else (sameAs says whether it is
// that operation, amounts and all, pending or finished) is a reused key:
// refused, since resuming would answer it with another request's outcome.
func (s *Service) startBankOp(ctx context.Context, id, opKey string, sameAs func(*sql.Tx, *Payment) (bool, error), prepare func(*sql.Tx, *Payment, time.Time) (bool, error)) (Payment, error) {
	now := s.now()
	// Own the payment before writing the operation ahead: the resolver
	// must never take a live request's operation for an orphan.
	if !s.own(id) {
		return Payment{}, s.busy(ctx, id, prepare)
	}
	defer s.release(id)
	var p Payment
	call := false
	err := s.DB.Update(ctx, func(tx *sql.Tx) error {
		var err error
		if p, err = getPayment(tx, id); err != nil {
			return err
		}
		repeat := opKey != "" && p.pendingOpKey == opKey
		if repeat && p.PendingOp != opReverse {
			if same, err := sameAs(tx, &p); err != nil {
				return err
			} else if !same {
				return errReuse
			}
		}
		if p.PendingOp != "" && p.PendingOp != opReverse {
			if repeat {
				call = true
				return nil
			}
			if p.Status != Pending {
				return errInProgress
			}
			// An authorization still running: prepare refuses by status
			// (payment_not_authorized for a capture, as the contract says).
		}
		if repeat {
			return nil // this very request already finished
		}
		from := p.Status
		if call, err = prepare(tx, &p, now); err != nil || !call {
			if err == nil {
				_, err = settleOrder(tx, p.OrderID, now)
			}
			return err
		}
		return save(tx, &p, from, "", now)
	})
	if err != nil || !call {
		return p, err
	}
	return s.runOp(ctx, p.ID, false)
}

// busy answers a request for a payment another goroutine is working on:
// the refusal its status gives (a capture before the authorization has
// finished is payment_not_authorized, as the contract says), else
// payment_in_progress. prepare runs in a transaction that is always
// rolled back.
func (s *Service) busy(ctx context.Context, id string, prepare func(*sql.Tx, *Payment, time.Time) (bool, error)) error {
	var refusal error
	err := s.DB.Update(ctx, func(tx *sql.Tx) error {
		p, err := getPayment(tx, id)
		if err != nil {
			return err
		}
		if _, err := prepare(tx, &p, s.now()); err != nil {
			refusal = err
		}
		return errRollback
	})
	if refusal != nil {
		return refusal
	}
	if err != nil && !errors.Is(err, errRollback) {
		return err
	}
	return errInProgress
}

var errRollback = errors.New("rollback")

// runOp makes the bank call of a payment's pending capture, void or
// refund and records its outcome. The caller owns the payment.
func (s *Service) runOp(ctx context.Context, id string, resolving bool) (Payment, error) {
	p, err := s.Payment(ctx, id)
	if err != nil {
		return Payment{}, err
	}
	var (
		auth gateway.Authorization
		rf   gateway.Refund
	)
	// done tells, from the bank's records, that the operation was done.
	var done func(gateway.Authorization) bool
	switch p.PendingOp {
	case opCapture:
		done = func(a gateway.Authorization) bool { return a.ID == p.BankAuthID && a.CapturedAmount > 0 }
	case opVoid:
		done = func(a gateway.Authorization) bool { return a.ID == p.BankAuthID && a.Status == gateway.StatusReversed }
	}
	if done != nil && p.resolveAttempts >= 2 {
		// Repeats have not told twice: the bank may be replaying a failure
		// it kept as the key's answer. Its records go first now (a repeat
		// that fails again could open the breaker in the lookup's way).
		if a, ok := s.heldAtBank(ctx, p, done); ok {
			return s.finishOp(ctx, p, a, rf, nil, resolving)
		}
	}
	// The operation's budget starts after any lookup, which has its own.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opBudget())
	defer cancel()
	switch p.PendingOp {
	case opCapture:
		auth, err = s.Bank.Capture(ctx, p.Gateway, gateway.CaptureRequest{Key: p.pendingKey,
			AuthorizationID: p.BankAuthID, Amount: p.pendingAmount + p.pendingTip})
	case opVoid:
		_, err = s.Bank.Reverse(ctx, p.Gateway, gateway.ReverseRequest{Key: p.pendingKey, AuthorizationID: p.BankAuthID})
	case opRefund:
		rf, err = s.Bank.Refund(ctx, p.Gateway, gateway.RefundRequest{Key: p.pendingKey,
			AuthorizationID: p.BankAuthID, Amount: p.pendingAmount, Reference: p.pendingKey})
	default:
		return p, nil
	}
	if resolving || p.resolveAttempts > 0 {
		// An earlier attempt may have reached the bank.
		err = unresolved(err, p.Gateway)
		if e := gateway.AsError(err); e != nil && e.Kind == gateway.KindUnknown && done != nil && p.resolveAttempts < 2 {
			// Still unknown: the bank's records may say it was done.
			if a, ok := s.heldAtBank(ctx, p, done); ok {
				return s.finishOp(ctx, p, a, rf, nil, resolving)
			}
		}
	}
	return s.finishOp(ctx, p, auth, rf, err, resolving)
}

func (s *Service) finishOp(ctx context.Context, started Payment, auth gateway.Authorization, rf gateway.Refund, callErr error, resolving bool) (Payment, error) {
	now := s.now()
	op := started.PendingOp
	var p Payment
	var result error
	// The bank has answered (or the budget ran out): its outcome is
	// recorded even when ctx, the call's budget, has just expired.
	err := s.DB.Update(context.WithoutCancel(ctx), func(tx *sql.Tx) error {
		result = nil
		var err error
		if p, err = getPayment(tx, started.ID); err != nil {
			return err
		}
		if p.PendingOp != op || p.pendingKey != started.pendingKey {
			return nil // finished meanwhile
		}
		from := p.Status
		refundStatus := ""
		e := gateway.AsError(callErr)
		orderCancelled := false
		if op == opVoid && e != nil && e.Kind == gateway.KindRejected {
			o, err := getOrderHead(tx, p.OrderID)
			if err != nil {
				return err
			}
			orderCancelled = o.Status == OrderCancelled
		}
		switch {
		case callErr == nil:
			switch op {
			case opCapture:
				p.Status, p.Amount, p.TipAmount = Captured, p.pendingAmount, p.pendingTip
				p.CapturedAmount = auth.CapturedAmount
				if p.CapturedAmount == 0 {
					p.CapturedAmount = p.pendingAmount + p.pendingTip
				}
			case opVoid:
				p.Status = Voided
			case opRefund:
				applyRefund(&p, p.pendingAmount)
				refundStatus = "refunded"
			}
			p.LastError = ""
			p.clearOp()
		case op == opVoid && e != nil && e.Kind == gateway.KindRejected && p.CapturedAmount > p.RefundedAmount && orderCancelled:
			// The order was cancelled, but the bank would not void the
			// sale (settled already: the protocol names no code for it):
			// what it captured is refunded, so the customer does not pay
			// for a cancelled order. The refund's answer decides.
			r := Refund{ID: newID("rfd_"), PaymentID: p.ID, Amount: p.CapturedAmount - p.RefundedAmount, Status: "pending", CreatedAt: now}
			if _, err := tx.Exec(`INSERT INTO refunds (id, payment_id, amount, status, op_key, created_at, updated_at)
				VALUES (?,?,?,?,?,?,?)`, r.ID, p.ID, r.Amount, r.Status, nullable(""), ts(now), ts(now)); err != nil {
				return err
			}
			s.startOp(&p, opRefund, r.ID, "", r.Amount, 0, now)
			p.LastError = "the bank would not void it (" + e.Code + ") once the order was cancelled: refunding " + fmt.Sprint(r.Amount)
			result = &Error{Kind: KindUnavailable, Code: "bank_unavailable", Transient: true,
				Message: "the bank had settled this payment; it is being refunded"}
		case e != nil && e.Kind == gateway.KindRejected:
			p.LastError = callErr.Error()
			refundStatus = "failed"
			p.clearOp()
			// Not done: a repeat of the request asks again (and hears the
			// bank's answer), rather than being told it finished.
			p.pendingOpKey, p.keyOp = "", ""
			result = rejection(op, e)
		case gateway.NothingDone(callErr) && !resolving:
			p.LastError = callErr.Error()
			refundStatus = "failed"
			p.clearOp()
			p.pendingOpKey, p.keyOp = "", ""
			result = errf(KindUnavailable, "bank_unavailable", "no bank could be reached; nothing was done, try again")
		default:
			p.LastError = callErr.Error()
			s.backoff(&p, now, callErr)
			result = &Error{Kind: KindUnavailable, Code: "bank_unavailable",
				Message: "the bank did not confirm; storepay keeps retrying it with the same key", Transient: true}
		}
		if refundStatus != "" && op == opRefund {
			if _, err := tx.Exec(`UPDATE refunds SET status=?, bank_refund_id=?, updated_at=? WHERE id=?`,
				refundStatus, rf.ID, ts(now), started.pendingKey); err != nil {
				return err
			}
		}
		if err := save(tx, &p, from, op, now); err != nil {
			return err
		}
		_, err = settleOrder(tx, p.OrderID, now)
		return err
	})
	if err != nil {
		return Payment{}, err
	}
	s.log().Info("payment operation", "payment_id", p.ID, "op", op, "status", p.Status, "pending_op", p.PendingOp, "err", callErr)
	if result != nil {
		return p, result
	}
	return p, nil
}

// settledRejection reports whether a bank refused a reversal because the
// authorization is settled. The protocol names no code for it: any code
// that says so (already_settled, authorization_settled, ...) is read as
// such.
func settledRejection(e *gateway.Error) bool {
	return e != nil && e.Kind == gateway.KindRejected && strings.Contains(e.Code, "settled")
}

func rejection(op string, e *gateway.Error) error {
	if op == opVoid && settledRejection(e) {
		return errf(KindConflict, "payment_settled", "the bank has settled this payment; refund it instead")
	}
	return errf(KindInvalid, rejectedCode(e), "the bank rejected the %s (%s)", op, rejectedCode(e))
}
