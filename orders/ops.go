package orders

import (
	"context"
	"database/sql"
	"errors"
	"time"
)

// CaptureRequest captures an authorized payment.
type CaptureRequest struct {
	PaymentID string
	Request
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
		if p.PendingOp == OpNone {
			// keyOp is empty on rows older than it: the status tells then.
			return (p.keyOp == OpCapture || p.keyOp == "" && p.Status != Authorized) &&
				p.Amount == amount && p.TipAmount == req.TipAmount, nil
		}
		return p.PendingOp == OpCapture && p.pendingAmount == amount && p.pendingTip == req.TipAmount, nil
	}
	earlier := func(k keyMade) bool {
		return k.op == OpCapture && (req.Amount == nil || *req.Amount == k.amount) && req.TipAmount == k.tip
	}
	return s.startBankOp(ctx, req.PaymentID, req.Request, sameAs, earlier, func(tx *sql.Tx, p *Payment, now time.Time) (bool, error) {
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
		return true, s.transition(tx, p, move{ev: EvCaptureAsked, lease: s.leaseFor(now, s.opBudget()),
			start: &opStart{key: captureKey(p.ID, amount+req.TipAmount), opKey: req.Key, amount: amount, tip: req.TipAmount}}, now)
	})
}

// VoidRequest voids a payment.
type VoidRequest struct {
	PaymentID string
	Request
}

// Void cancels a payment before it settles: a cash payment is handed
// back, a stored one leaves the queue, a card payment is reversed at its
// bank. Voiding a voided payment is a no-op. Errors: payment_not_found
// (404); payment_not_voidable, payment_settled, payment_in_progress (409);
// bank_unavailable (503).
func (s *Service) Void(ctx context.Context, req VoidRequest) (Payment, error) {
	sameAs := func(_ *sql.Tx, p *Payment) (bool, error) {
		return p.PendingOp == OpVoid || p.PendingOp == OpNone && (p.keyOp == OpVoid || p.keyOp == "" && p.Status == Voided), nil
	}
	earlier := func(k keyMade) bool { return k.op == OpVoid }
	return s.startBankOp(ctx, req.PaymentID, req.Request, sameAs, earlier, func(tx *sql.Tx, p *Payment, now time.Time) (bool, error) {
		switch {
		case p.Status == Voided:
			return false, nil
		case p.Status == Stored:
			return false, s.voidStored(tx, p, "voided before forwarding", now)
		case p.Method == Cash && p.Status == Captured:
			p.pendingOpKey, p.keyOp = req.Key, OpVoid
			if err := rememberKey(tx, req.Key, p.ID, OpVoid, 0, 0, now); err != nil {
				return false, err
			}
			return false, s.transition(tx, p, move{ev: EvCashReturned, detail: "cash handed back"}, now)
		case p.Method == Card && (p.Status == Authorized || p.Status == Captured):
			return true, s.transition(tx, p, move{ev: EvVoidAsked, lease: s.leaseFor(now, s.opBudget()),
				start: &opStart{key: voidKey(p.ID), opKey: req.Key}}, now)
		}
		return false, errf(KindConflict, "payment_not_voidable", "payment %s is %s and cannot be voided", p.ID, p.Status)
	})
}

// RefundRequest refunds part or all of a captured payment.
type RefundRequest struct {
	PaymentID string
	Request
	Amount int64
}

// Refund refunds part or all of a captured payment. Errors:
// payment_not_found (404); payment_not_captured, payment_in_progress
// (409); invalid_amount, refund_exceeds_capture (422); bank_unavailable
// (503).
func (s *Service) Refund(ctx context.Context, req RefundRequest) (Payment, error) {
	opKey, amount := req.Key, req.Amount
	sameAs := func(tx *sql.Tx, p *Payment) (bool, error) {
		if p.PendingOp != OpNone {
			return p.PendingOp == OpRefund && p.pendingAmount == amount, nil
		}
		if p.keyOp != "" && p.keyOp != OpRefund {
			return false, nil
		}
		var made int64
		err := tx.QueryRow(`SELECT amount FROM refunds WHERE op_key = ? AND payment_id = ?`, opKey, p.ID).Scan(&made)
		if errors.Is(err, sql.ErrNoRows) {
			return false, nil
		}
		return made == amount, err
	}
	earlier := func(k keyMade) bool { return k.op == OpRefund && k.amount == amount }
	return s.startBankOp(ctx, req.PaymentID, req.Request, sameAs, earlier, func(tx *sql.Tx, p *Payment, now time.Time) (bool, error) {
		if opKey != "" && !Planted(BugRefundRepeatAfterPrune) {
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
		if p.Method == Cash {
			r, err := s.insertRefund(tx, p.ID, amount, "refunded", opKey, now)
			if err != nil {
				return false, err
			}
			p.pendingOpKey, p.keyOp = opKey, OpRefund
			if err := rememberKey(tx, opKey, p.ID, OpRefund, amount, 0, now); err != nil {
				return false, err
			}
			return false, s.transition(tx, p, move{ev: refundEvent(p, amount), detail: "cash refund " + r}, now)
		}
		refundKeyCol := opKey
		if Planted(BugRefundRepeatAfterPrune) {
			refundKeyCol = "" // the old refunds kept no key: nothing told a repeat
		}
		r, err := s.insertRefund(tx, p.ID, amount, "pending", refundKeyCol, now)
		if err != nil {
			return false, err
		}
		return true, s.transition(tx, p, move{ev: EvRefundAsked, lease: s.leaseFor(now, s.opBudget()),
			start: &opStart{key: refundKey(r), opKey: refundKeyCol, amount: amount}}, now)
	})
}

// insertRefund records a refund of a payment and returns its id.
func (s *Service) insertRefund(tx *sql.Tx, paymentID string, amount int64, status, opKey string, now time.Time) (string, error) {
	id := s.newID("rfd_")
	_, err := tx.Exec(`INSERT INTO refunds (id, payment_id, amount, status, op_key, created_at, updated_at)
		VALUES (?,?,?,?,?,?,?)`, id, paymentID, amount, status, nullable(opKey), ts(now), ts(now))
	return id, err
}

// refundEvent applies a refund of amount to p and names the event: the
// rest of the capture refunded, or a part.
func refundEvent(p *Payment, amount int64) Event {
	p.RefundedAmount += amount
	if p.RefundedAmount >= p.CapturedAmount {
		return EvRefundedInFull
	}
	return EvRefundedPart
}

// startBankOp writes an operation ahead (prepare decides, inside the
// write transaction, whether there is a bank call to make, and makes the
// transition) and runs it. A repeat of the request that started or
// finished the current operation resumes it or returns its result. A
// request under the key of an operation that asks for something else
// (sameAs says whether it is that operation, amounts and all, pending or
// finished) is a reused key: refused, since resuming would answer it with
// another request's outcome.
func (s *Service) startBankOp(ctx context.Context, id string, req Request, sameAs func(*sql.Tx, *Payment) (bool, error), earlier func(keyMade) bool, prepare func(*sql.Tx, *Payment, time.Time) (bool, error)) (Payment, error) {
	now := s.now()
	var p Payment
	call, resumed := false, false
	err := s.DB.Update(ctx, func(tx *sql.Tx) error {
		var err error
		if p, err = getPayment(tx, id); err != nil {
			return err
		}
		repeat := req.Key != "" && p.pendingOpKey == req.Key
		if !repeat && req.Key != "" {
			// A key of an earlier operation, which a later one replaced on
			// the payment: recognised by what it made.
			made, found, err := keyMadeBy(tx, req.Key)
			switch {
			case err != nil:
				return err
			case !found:
			case made.paymentID != p.ID || !earlier(made):
				return errReuse
			default:
				return nil // that request finished: nothing new, the payment as it is
			}
		}
		if repeat && p.PendingOp != OpReverse {
			if same, err := sameAs(tx, &p); err != nil {
				return err
			} else if !same {
				return errReuse
			}
		}
		if p.PendingOp != OpNone && p.PendingOp != OpReverse {
			switch {
			case repeat && s.leased(p, now):
				return errKeyInUse
			case repeat:
				// The first attempt was cut off, or its answer not stored:
				// the repeat resumes it under the same key.
				call, resumed = true, true
				return s.claim(tx, &p, s.leaseFor(now, s.opBudget()))
			case p.Status != Pending:
				return errInProgress
			}
			// An authorization still running: prepare refuses by status
			// (payment_not_authorized for a capture, as the contract says).
		}
		if repeat {
			return nil // this very request already finished
		}
		call, err = prepare(tx, &p, now)
		return err
	})
	if err != nil || !call {
		return p, err
	}
	return s.runOp(ctx, p, false, resumed, req.Reply)
}

// Cancel cancels an order that has not been delivered and returns its
// money: cash is handed back at once, stored payments leave the
// store-and-forward queue, card payments are voided at their bank, or
// refunded once it settled them. A cancel's bank operations never end
// while the bank keeps any of the money: the resolver repeats them until
// it gives it back. Cancelling a cancelled order is a no-op. Errors:
// order_not_found, order_delivered (409), payment_in_progress (409,
// transient).
func (s *Service) Cancel(ctx context.Context, id string) (Order, error) {
	var undo []Payment
	err := s.DB.Update(ctx, func(tx *sql.Tx) error {
		undo = undo[:0]
		o, err := getOrder(tx, id)
		if err != nil {
			return err
		}
		switch o.Status {
		case OrderCancelled:
			return nil
		case OrderDelivered:
			return errf(KindConflict, "order_delivered", "order %s was delivered; refund its payments instead", id)
		}
		ps, err := queryPayments(tx, `WHERE order_id = ?`, id)
		if err != nil {
			return err
		}
		now := s.now()
		for i := range ps {
			p := &ps[i]
			if p.Status == Pending || (p.PendingOp != OpNone && p.PendingOp != OpReverse) {
				return errInProgress
			}
		}
		// The order first: the payments' transitions settle it.
		if _, err := tx.Exec(`UPDATE orders SET status=?, updated_at=? WHERE id=?`, OrderCancelled, ts(now), id); err != nil {
			return err
		}
		for i := range ps {
			p := &ps[i]
			lease := s.leaseFor(now, s.opBudget())
			switch {
			case p.Method == Cash && p.Status == Captured:
				err = s.transition(tx, p, move{ev: EvCashReturned, detail: "order cancelled: cash handed back"}, now)
			case p.Method == Cash && p.Status == PartiallyRefunded:
				left := p.CapturedAmount - p.RefundedAmount
				var r string
				if r, err = s.insertRefund(tx, p.ID, left, "refunded", "", now); err == nil {
					p.RefundedAmount = p.CapturedAmount
					err = s.transition(tx, p, move{ev: EvRefundedInFull, detail: "order cancelled: cash handed back, refund " + r}, now)
				}
			case p.Status == Stored:
				err = s.voidStored(tx, p, "order cancelled before forwarding", now)
			case p.Method == Card && (p.Status == Authorized || p.Status == Captured):
				err = s.transition(tx, p, move{ev: EvCancelAsked, detail: "order cancelled", lease: lease,
					start: &opStart{key: voidKey(p.ID)}}, now)
				undo = append(undo, *p)
			case p.Method == Card && p.Status == PartiallyRefunded && !Planted(BugCancelLeavesPartialRefund):
				left := p.CapturedAmount - p.RefundedAmount
				var r string
				if r, err = s.insertRefund(tx, p.ID, left, "pending", "", now); err == nil {
					err = s.transition(tx, p, move{ev: EvCancelAsked, detail: "order cancelled: refunding the rest", lease: lease,
						start: &opStart{key: refundKey(r), amount: left}}, now)
					undo = append(undo, *p)
				}
			}
			if err != nil {
				return err
			}
		}
		_, err = settleOrder(tx, id, now)
		return err
	})
	if err != nil {
		return Order{}, err
	}
	// Run as the resolver runs them: an operation the bank did not
	// confirm, even one it provably did not act on, stays pending and is
	// retried with the same key. The order is cancelled: nobody else
	// would ask.
	for _, p := range undo {
		if _, err := s.runOp(ctx, p, true, false, nil); err != nil {
			s.log().WarnContext(ctx, "cancel's bank operation left to the resolver", "payment_id", p.ID, "op", p.PendingOp, "err", err)
		}
	}
	return s.Order(ctx, id)
}
