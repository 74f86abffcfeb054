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

// This file performs the bank calls of the operations a payment has
// written ahead (the effects of the payment machine) and turns each
// bank's answer into the machine's event. A live request and the
// resolver run the very same code; the one difference is resolving: with
// nobody waiting, an answer that proves nothing was done is no reason to
// give up, and the operation is repeated later.

// runOp makes the bank call of p's pending capture, void, refund or
// cancel operation and records its outcome. The caller holds p's lease.
// resumed says the operation was written ahead before this call, so an
// earlier attempt may have reached the bank (a repeat of the request
// after a crash or a lost answer): then only the bank's answer ends it.
// reply stores the terminal's answer with a successful outcome.
func (s *Service) runOp(ctx context.Context, p Payment, resolving, resumed bool, reply Reply) (Payment, error) {
	defer s.letGo(p.leaseOwner, p.leaseUntil)
	var (
		auth gateway.Authorization
		rf   gateway.Refund
		err  error
	)
	// done tells, from the bank's records, that the operation was done.
	var done func(gateway.Authorization) bool
	switch p.PendingOp {
	case OpCapture:
		done = func(a gateway.Authorization) bool { return a.ID == p.BankAuthID && a.CapturedAmount > 0 }
	case OpVoid, OpCancelVoid:
		done = func(a gateway.Authorization) bool { return a.ID == p.BankAuthID && a.Status == gateway.StatusReversed }
	}
	lookups := !Planted(BugNoLookupForKeptFailure)
	stale := s.stale(p)
	if done != nil && (p.resolveAttempts >= 2 || stale) && lookups {
		// Repeats have not told twice: the bank may be replaying a failure
		// it kept as the key's answer. Or the key may be gone. Its records
		// go first now (a repeat that fails again could open the breaker
		// in the lookup's way).
		if a, ok := s.heldAtBank(ctx, p, done); ok {
			return s.finishOp(ctx, p, a, rf, nil, resolving, reply)
		}
	}
	if (p.PendingOp == OpRefund || p.PendingOp == OpCancelRefund) && (p.resolveAttempts >= 2 || stale) && lookups {
		// No lookup finds a refund: the bank's settlement reports do,
		// once its day closed, when repeats keep hearing a failure the
		// bank kept as the key's answer, or when the key may be gone.
		found, complete, none := s.refundInReport(ctx, p.Gateway, p.ID, p.pendingKey, p.pendingAmount, s.refundsMade(ctx, p.ID, p.pendingAmount), p.pendingSince)
		// Asked again after the reading: a process suspended in it (a
		// paused VM, a laptop lid) can wake past the day the key is kept.
		stale = stale || s.stale(p)
		switch {
		case found:
			return s.finishOp(ctx, p, auth, rf, nil, resolving, reply)
		case stale && !complete && !none:
			// Its key may be gone and the reports cannot tell: a repeat
			// could refund twice. It waits for the reports.
			return s.finishOp(ctx, p, auth, rf, &gateway.Error{Kind: gateway.KindUnknown, Gateway: p.Gateway,
				Err: errors.New("the refund's key may be gone at the bank and its settlement reports cannot be read yet")}, resolving, reply)
		}
	}
	// The operation's budget starts after any lookup, which has its own.
	octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opBudget())
	defer cancel()
	switch p.PendingOp {
	case OpCapture:
		auth, err = s.Bank.Capture(octx, p.Gateway, gateway.CaptureRequest{Key: p.pendingKey,
			AuthorizationID: p.BankAuthID, Amount: p.pendingAmount + p.pendingTip})
	case OpVoid, OpCancelVoid:
		_, err = s.Bank.Reverse(octx, p.Gateway, gateway.ReverseRequest{Key: p.pendingKey, AuthorizationID: p.BankAuthID})
	case OpRefund, OpCancelRefund:
		rf, err = s.Bank.Refund(octx, p.Gateway, gateway.RefundRequest{Key: p.pendingKey,
			AuthorizationID: p.BankAuthID, Amount: p.pendingAmount, Reference: p.pendingKey})
	default:
		return p, nil
	}
	if resolving || resumed || p.resolveAttempts > 0 {
		// An earlier attempt may have reached the bank.
		if e := gateway.AsError(err); e != nil && e.Kind == gateway.KindRejected && done != nil && lookups {
			// Refused as done already (already_captured, or a key the bank
			// forgot): its records say whether it was this operation.
			a, ok, lerr := s.lookup(ctx, p, done)
			switch {
			case ok:
				return s.finishOp(ctx, p, a, rf, nil, resolving, reply)
			case lerr != nil && !gateway.NoLookup(lerr):
				// The bank cannot say now: the refusal proves nothing yet.
				err = &gateway.Error{Kind: gateway.KindUnknown, Gateway: p.Gateway,
					Err: fmt.Errorf("refused (%w) and the bank's records cannot be read: %w", err, lerr)}
			}
		}
		err = unresolved(err, p.Gateway)
		if e := gateway.AsError(err); e != nil && e.Kind == gateway.KindUnknown && done != nil && p.resolveAttempts < 2 && lookups {
			// Still unknown: the bank's records may say it was done.
			if a, ok := s.heldAtBank(ctx, p, done); ok {
				return s.finishOp(ctx, p, a, rf, nil, resolving, reply)
			}
		}
	}
	return s.finishOp(ctx, p, auth, rf, err, resolving, reply)
}

// opAnswer decides what a bank's answer to p's operation makes of it: the
// machine's event, the refund's new status, and the error its terminal
// hears (nil: done). It changes p's fields to match; it writes nothing.
func (s *Service) opAnswer(p *Payment, auth gateway.Authorization, callErr error, resolving bool, now time.Time) (m move, refundStatus string, result error) {
	op := p.PendingOp
	e := gateway.AsError(callErr)
	cancelling := op == OpCancelVoid || op == OpCancelRefund
	switch {
	case callErr == nil:
		p.noteError(nil)
		switch op {
		case OpCapture:
			p.Amount, p.TipAmount = p.pendingAmount, p.pendingTip
			p.CapturedAmount = auth.CapturedAmount
			if p.CapturedAmount == 0 {
				p.CapturedAmount = p.pendingAmount + p.pendingTip
			}
			return move{ev: EvCaptured}, "", nil
		case OpVoid, OpCancelVoid:
			return move{ev: EvVoided}, "", nil
		default: // a refund
			return move{ev: refundEvent(p, p.pendingAmount)}, "refunded", nil
		}
	case op == OpCancelVoid && e != nil && e.Kind == gateway.KindRejected && p.CapturedAmount > p.RefundedAmount:
		// The order was cancelled, but the bank would not void the sale
		// (settled already: the protocol names no code for it): what it
		// captured is refunded, so the customer does not pay for a
		// cancelled order. The refund's answer decides.
		return move{ev: EvSettled, detail: "the bank would not void it (" + rejectedCode(e) + "): refunding the capture"}, "", nil
	case cancelling:
		// A cancel's operation ends only when the money is back: every
		// other answer is retried (a refusal stays for a manager to see).
		s.backoff(p, now, callErr)
		return move{ev: EvRetry}, "", nil
	case e != nil && e.Kind == gateway.KindRejected:
		p.noteError(callErr)
		// Not done: a repeat of the request asks again (and hears the
		// bank's answer), rather than being told it finished.
		p.pendingOpKey, p.keyOp = "", ""
		return move{ev: EvOpFailed, detail: rejectedCode(e)}, "failed", rejection(op, e)
	case gateway.NothingDone(callErr) && !resolving && !((op == OpCapture || op == OpVoid) && s.Bank.DeliversAdvices(p.Gateway)):
		p.noteError(callErr)
		if op != OpCapture || !Planted(BugCaptureAnsweredAfterNothingDone) {
			p.pendingOpKey, p.keyOp = "", ""
		}
		return move{ev: EvOpFailed, detail: "nothing done"}, "failed",
			errf(KindUnavailable, "bank_unavailable", "no bank could be reached; nothing was done, try again")
	}
	s.backoff(p, now, callErr)
	return move{ev: EvRetry}, "", &Error{Kind: KindUnavailable, Code: "bank_unavailable",
		Message: "the bank did not confirm; storepay keeps retrying it with the same key", Transient: true}
}

// finishOp records the outcome of started's operation, unless the
// operation finished meanwhile.
func (s *Service) finishOp(ctx context.Context, started Payment, auth gateway.Authorization, rf gateway.Refund, callErr error, resolving bool, reply Reply) (Payment, error) {
	now := s.now()
	op := started.PendingOp
	var p Payment
	var result error
	// The bank has answered (or the budget ran out): its outcome is
	// recorded even when ctx, the call's budget, has just expired.
	err := s.DB.Update(context.WithoutCancel(ctx), func(tx *sql.Tx) error {
		var err error
		if p, err = getPayment(tx, started.ID); err != nil {
			return err
		}
		if p.PendingOp != op || p.pendingKey != started.pendingKey {
			result = nil
			return nil // finished meanwhile
		}
		if !holds(p, started.leaseOwner) {
			result = errLeaseLost
			return nil
		}
		refundID, opKey := p.pendingKey, p.pendingOpKey
		m, refundStatus, res := s.opAnswer(&p, auth, callErr, resolving, now)
		result = res
		if m.ev == EvOpFailed && !Planted(BugCaptureAnsweredAfterNothingDone) {
			if err := forgetKey(tx, opKey); err != nil {
				return err
			}
		}
		if refundStatus != "" && (op == OpRefund || op == OpCancelRefund) {
			if _, err := tx.Exec(`UPDATE refunds SET status=?, bank_refund_id=?, updated_at=? WHERE id=?`,
				refundStatus, rf.ID, ts(now), refundID); err != nil {
				return err
			}
		}
		if m.ev == EvSettled {
			left := p.CapturedAmount - p.RefundedAmount
			r, err := s.insertRefund(tx, p.ID, left, "pending", "", now)
			if err != nil {
				return err
			}
			m.start = &opStart{key: refundKey(r), amount: left}
		}
		if result == nil {
			m.reply = reply
		}
		return s.transition(tx, &p, m, now)
	})
	if err != nil {
		return Payment{}, err
	}
	s.log().InfoContext(ctx, "payment operation", "payment_id", p.ID, "op", op, "status", p.Status, "pending_op", p.PendingOp, "err", callErr)
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

func rejection(op Op, e *gateway.Error) error {
	if op == OpVoid && settledRejection(e) {
		return errf(KindConflict, "payment_settled", "the bank has settled this payment; refund it instead")
	}
	return errf(KindInvalid, rejectedCode(e), "the bank rejected the %s (%s)", op, rejectedCode(e))
}

// heldAtBank asks the payment's bank what it holds under the payment's
// reference and returns the authorization done that settles the pending
// operation (an approval before a decline). Repeating the request under
// its key is how an unknown outcome is heard, and is tried first; but a
// bank that kept a failure (a 5xx) as the key's answer replays it to
// every repeat, while its records show what it did. The lookup has a
// budget of its own (the repeat may have used the operation's), and one
// that fails or finds nothing settles nothing: the resolver tries again.
func (s *Service) heldAtBank(ctx context.Context, p Payment, done func(gateway.Authorization) bool) (gateway.Authorization, bool) {
	a, ok, _ := s.lookup(ctx, p, done)
	return a, ok
}

// lookup is heldAtBank that also says when the bank could not be asked.
func (s *Service) lookup(ctx context.Context, p Payment, done func(gateway.Authorization) bool) (gateway.Authorization, bool, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupBudget)
	defer cancel()
	auths, err := s.Bank.Find(ctx, p.Gateway, gateway.Lookup{Reference: p.ID})
	if err != nil {
		return gateway.Authorization{}, false, err
	}
	var found gateway.Authorization
	ok := false
	for _, a := range auths {
		if a.Reference == p.ID && done(a) && (!ok || a.Status == gateway.StatusApproved) {
			found, ok = a, true
		}
	}
	return found, ok, nil
}

// keyMayBeGone is how old a written-ahead operation must be before its
// key may be gone at the bank: banks keep keys at least 7 days (the
// protocol), and a repeat under a forgotten key is a new request, a
// second charge or refund. Past this age an operation is looked up (or
// found in the settlement reports) before it is repeated, and is not
// repeated while the bank cannot be asked. A day leaves the 7 days far
// away whatever the clocks do.
const keyMayBeGone = 24 * time.Hour

func (s *Service) stale(p Payment) bool { return s.now().Sub(p.pendingSince) > keyMayBeGone }

// lookupBudget bounds the lookup that follows a repeat still unknown.
const lookupBudget = 10 * time.Second

// lookupSettles is how old a request must be before a bank's lookup that
// finds nothing under its key proves it was never processed: longer than
// any request of a payment's 30 s budget can still be running at a bank.
const lookupSettles = 2 * time.Minute

// reverseUnknown resolves a payment the terminal heard as declined (or
// voided) while its bank's answer was unknown. The bank is asked what it
// holds under the payment's reference (a lookup charges nobody) and an
// approval found is reversed. Nothing found means nothing was done, once
// the request is old enough that it cannot still be running at the bank;
// until then the lookup is repeated. A bank that refuses the lookup gets
// the request repeated under its key (the bank does the work at most
// once), and an approval is reversed; with no card left to repeat it, a
// reversal by reference.
func (s *Service) reverseUnknown(ctx context.Context, p Payment) (Payment, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opBudget())
	defer cancel()
	var auth gateway.Authorization
	refunded := false
	// undo reverses the approval a; one the bank settled meanwhile (the
	// business day closed) can no longer be reversed and is refunded in
	// full instead, so the card holder is never left charged.
	undo := func(a gateway.Authorization) error {
		auth = a
		if a.CapturedAmount > 0 && (p.resolveAttempts >= 2 || s.stale(p)) && !Planted(BugNoLookupForKeptFailure) {
			switch found, complete, none := s.refundInReport(ctx, p.Gateway, p.ID, p.ID, a.CapturedAmount, 0, p.pendingSince); {
			case found:
				refunded = true // refunded earlier, behind a failure the bank kept as the key's answer
				return nil
			case s.stale(p) && !complete && !none:
				return &gateway.Error{Kind: gateway.KindUnknown, Gateway: p.Gateway,
					Err: errors.New("an earlier refund's key may be gone at the bank and its settlement reports cannot be read yet")}
			}
		}
		_, err := s.Bank.Reverse(ctx, p.Gateway, gateway.ReverseRequest{Key: undoKey(p.ID), AuthorizationID: a.ID})
		// The protocol names no code for a settled authorization: any
		// refusal to reverse a captured approval is answered with a
		// refund, and the bank's answer to that decides.
		if e := gateway.AsError(err); e == nil || e.Kind != gateway.KindRejected || a.CapturedAmount <= 0 {
			return err
		}
		if Planted(BugSettledUndoCountedDone) {
			return nil
		}
		_, err = s.Bank.Refund(ctx, p.Gateway, gateway.RefundRequest{Key: settledUndoKey(p.ID),
			AuthorizationID: a.ID, Amount: a.CapturedAmount, Reference: p.ID})
		refunded = err == nil
		return err
	}
	// By reference, not by key: a voided stored payment may have reached
	// the bank as an online request (key: the payment id) or as a stored
	// advice (its own key), and both carry the payment's reference.
	auths, err := s.Bank.Find(ctx, p.Gateway, gateway.Lookup{Reference: p.ID})
	switch e := gateway.AsError(err); {
	case err == nil:
		if len(auths) == 0 && s.now().Sub(p.pendingSince) < lookupSettles {
			err = errors.New("the bank holds nothing under this payment's key yet; looking again later")
		}
		for _, a := range auths {
			if a.Status == gateway.StatusApproved {
				err = undo(a)
				break
			}
		}
	case gateway.NoLookup(err):
		// A protocol without lookup (ISO 8583): the reversal advice of
		// whatever the bank may hold of the payment, repeated until
		// acknowledged, is how it is undone.
		_, err = s.Bank.Reverse(ctx, p.Gateway, gateway.ReverseRequest{Key: undoByReferenceKey(p.ID), Reference: p.ID})
	case e != nil && e.Kind == gateway.KindRejected:
		card, openErr := s.Vault.Open(p.ID, p.sealed)
		if openErr != nil {
			_, err = s.Bank.Reverse(ctx, p.Gateway, gateway.ReverseRequest{Key: undoByReferenceKey(p.ID), Reference: p.ID})
			break
		}
		var a gateway.Authorization
		a, err = s.Bank.AuthorizeAt(ctx, p.Gateway, s.authRequest(p, card))
		if err = unresolved(err, p.Gateway); err == nil && a.Status == gateway.StatusApproved {
			err = undo(a)
		}
	}
	answered := err == nil || gateway.AsError(err) != nil && gateway.AsError(err).Kind == gateway.KindRejected
	now := s.now()
	uerr := s.DB.Update(context.WithoutCancel(ctx), func(tx *sql.Tx) error {
		cur, gerr := getPayment(tx, p.ID)
		if gerr != nil || cur.PendingOp != OpReverse || !holds(cur, p.leaseOwner) {
			return gerr
		}
		m := move{ev: EvUndone}
		switch {
		case !answered:
			s.backoff(&cur, now, err)
			m = move{ev: EvRetry}
		case err != nil && auth.ID != "":
			// The bank refused the reversal or the refund: a manager must
			// look at this payment's approval at the bank.
			cur.noteError(err)
			cur.BankAuthID = auth.ID
			m = move{ev: EvUndoRefused, detail: "approval " + auth.ID + " could not be undone after an unknown outcome: " + err.Error()}
		case refunded:
			cur.noteError(nil)
			cur.BankAuthID = auth.ID
			m.detail = fmt.Sprintf("approval %s was settled before it could be reversed; refunded %d", auth.ID, auth.CapturedAmount)
		case auth.Status == gateway.StatusApproved:
			cur.noteError(nil)
			cur.BankAuthID = auth.ID
			m.detail = "approval " + auth.ID + " reversed after an unknown outcome"
		default:
			cur.noteError(nil)
		}
		p = cur
		err := s.transition(tx, &cur, m, now)
		p = cur
		return err
	})
	return p, uerr
}
