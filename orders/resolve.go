package orders

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"storepay/gateway"
)

// neverSentGrace is how long an authorization that never reached a bank
// (storepay stopped between writing it ahead and calling the bank) waits
// for its terminal to repeat the request before it is declined.
const neverSentGrace = time.Minute

// lookupSettles is how old a request must be before a bank's lookup that
// finds nothing under its key proves it was never processed: longer than
// any request of a payment's 30 s budget can still be running at a bank.
const lookupSettles = 2 * time.Minute

func jitter(n int64) int64 {
	if n <= 0 {
		return 0
	}
	return rand.Int64N(n)
}

// Resolve runs one resolution pass over every payment with a bank call
// written ahead that no live request in this process owns: after a crash
// those are all of them. Each is repeated at its bank with the same key
// (or looked up) until the bank gives a definitive answer; one that the
// bank does not answer now is retried later with backoff. It returns how
// many payments are still unresolved.
func (s *Service) Resolve(ctx context.Context) (int, error) {
	now := s.now()
	ps, err := queryPayments(s.DB.ReadAt(ctx), `WHERE pending_op <> '' ORDER BY pending_since`)
	if err != nil {
		return 0, err
	}
	remaining := 0
	for _, p := range ps {
		if ctx.Err() != nil {
			return remaining, ctx.Err()
		}
		if p.resolveAfter.After(now) || !s.own(p.ID) {
			remaining++
			continue
		}
		q, err := s.resolveOne(ctx, p, now)
		s.release(p.ID)
		if err != nil {
			s.log().Warn("resolve payment", "payment_id", p.ID, "op", p.PendingOp, "err", err)
		}
		if q.PendingOp != "" || err != nil {
			remaining++
		}
	}
	return remaining, nil
}

func (s *Service) resolveOne(ctx context.Context, p Payment, now time.Time) (Payment, error) {
	// Re-read: a live request may have finished it since the list was read.
	p, err := s.Payment(ctx, p.ID)
	if err != nil || p.PendingOp == "" {
		return p, err
	}
	resolutions.Add(ctx, 1, opAttr(p.PendingOp))
	switch p.PendingOp {
	case opAuthorize:
		if p.Gateway == "" {
			if now.Sub(p.pendingSince) < neverSentGrace {
				return p, nil
			}
			return s.declineNeverSent(ctx, p)
		}
		card, err := s.Vault.Open(p.ID, p.sealed)
		if err != nil {
			return p, err
		}
		decided := func(a gateway.Authorization) bool {
			return a.Status == gateway.StatusApproved || a.Status == gateway.StatusDeclined
		}
		if p.resolveAttempts >= 2 {
			// Repeats have not told twice: the bank's records go first (see
			// runOp).
			if a, ok := s.heldAtBank(ctx, p, decided); ok {
				return s.recordAuth(ctx, p.ID, PreferOnline, a, p.Gateway, nil, true)
			}
		}
		ctx, cancel := context.WithTimeout(ctx, s.authBudget())
		defer cancel()
		auth, err := s.Bank.AuthorizeAt(ctx, p.Gateway, s.authRequest(p, card))
		if e := gateway.AsError(err); e != nil && e.Kind == gateway.KindUnknown && p.resolveAttempts < 2 {
			// Still unknown: the bank's records may say what it did.
			if a, ok := s.heldAtBank(ctx, p, decided); ok {
				auth, err = a, nil
			}
		}
		return s.recordAuth(ctx, p.ID, PreferOnline, auth, p.Gateway, unresolved(err, p.Gateway), true)
	case opReverse:
		return s.reverseUnknown(ctx, p)
	default:
		return s.runOp(ctx, p.ID, true)
	}
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
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupBudget)
	defer cancel()
	auths, err := s.Bank.Find(ctx, p.Gateway, gateway.Lookup{Reference: p.ID})
	if err != nil {
		return gateway.Authorization{}, false
	}
	var found gateway.Authorization
	ok := false
	for _, a := range auths {
		if a.Reference == p.ID && done(a) && (!ok || a.Status == gateway.StatusApproved) {
			found, ok = a, true
		}
	}
	return found, ok
}

// lookupBudget bounds the lookup that follows a repeat still unknown.
const lookupBudget = 10 * time.Second

// declineNeverSent ends an authorization that was written ahead but never
// sent to any bank: nothing was charged, and its terminal, which never
// heard an answer, did not come back for it.
func (s *Service) declineNeverSent(ctx context.Context, p Payment) (Payment, error) {
	now := s.now()
	err := s.DB.Update(ctx, func(tx *sql.Tx) error {
		cur, err := getPayment(tx, p.ID)
		if err != nil || cur.PendingOp != opAuthorize || cur.Gateway != "" {
			return err
		}
		from := cur.Status
		cur.Status, cur.DeclineCode, cur.sealed = Declined, "not_processed", nil
		cur.clearOp()
		if err := save(tx, &cur, from, "never sent to a bank", now); err != nil {
			return err
		}
		p = cur
		_, err = settleOrder(tx, cur.OrderID, now)
		return err
	})
	return p, err
}

// reverseUnknown resolves a payment the terminal heard as declined while
// its bank's answer was unknown. The bank is asked what it holds under the
// payment's key (a lookup charges nobody) and an approval found is
// reversed. Nothing found means nothing was done, once the request is old
// enough that it cannot still be running at the bank; until then the
// lookup is repeated. A bank that refuses the lookup gets the request
// repeated under its key (the bank does the work at most once), and an
// approval is reversed; with no card left to repeat it, a reversal by
// reference.
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
		_, err := s.Bank.Reverse(ctx, p.Gateway, gateway.ReverseRequest{Key: p.ID + ":reverse", AuthorizationID: a.ID})
		// The protocol names no code for a settled authorization: any
		// refusal to reverse a captured approval is answered with a
		// refund, and the bank's answer to that decides.
		if e := gateway.AsError(err); e == nil || e.Kind != gateway.KindRejected || a.CapturedAmount <= 0 {
			return err
		}
		_, err = s.Bank.Refund(ctx, p.Gateway, gateway.RefundRequest{Key: p.ID + ":refund-settled",
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
	case e != nil && e.Kind == gateway.KindRejected:
		card, openErr := s.Vault.Open(p.ID, p.sealed)
		if openErr != nil {
			_, err = s.Bank.Reverse(ctx, p.Gateway, gateway.ReverseRequest{Key: p.ID + ":reverse-by-reference", Reference: p.ID})
			break
		}
		var a gateway.Authorization
		a, err = s.Bank.AuthorizeAt(ctx, p.Gateway, s.authRequest(p, card))
		if err = unresolved(err, p.Gateway); err == nil && a.Status == gateway.StatusApproved {
			err = undo(a)
		}
	}
	done := err == nil || gateway.AsError(err) != nil && gateway.AsError(err).Kind == gateway.KindRejected
	now := s.now()
	uerr := s.DB.Update(ctx, func(tx *sql.Tx) error {
		cur, gerr := getPayment(tx, p.ID)
		if gerr != nil || cur.PendingOp != opReverse {
			return gerr
		}
		detail := ""
		if done {
			cur.sealed = nil
			cur.clearOp()
			cur.LastError = ""
			switch {
			case err != nil && auth.ID != "":
				// The bank refused the reversal or the refund: a manager
				// must look at this payment's approval at the bank.
				cur.LastError = err.Error()
				detail = "approval " + auth.ID + " could not be undone after an unknown outcome: " + err.Error()
				cur.BankAuthID = auth.ID
			case refunded:
				detail = fmt.Sprintf("approval %s was settled before it could be reversed; refunded %d", auth.ID, auth.CapturedAmount)
				cur.BankAuthID = auth.ID
			case auth.Status == gateway.StatusApproved:
				detail = "approval " + auth.ID + " reversed after an unknown outcome"
				cur.BankAuthID = auth.ID
			}
			if detail != "" {
				if err := insertEvent(tx, cur.ID, cur.Status, cur.Status, detail, now); err != nil {
					return err
				}
			}
		} else {
			cur.LastError = err.Error()
			s.backoff(&cur, now, err)
		}
		p = cur
		return save(tx, &cur, cur.Status, "", now)
	})
	if uerr != nil {
		return p, uerr
	}
	return p, nil
}

// RunResolver resolves pending payments now and then every interval until
// ctx ends, and at once when a bank starts admitting traffic again: the
// payments waiting on it are made due then, whatever their backoff, so a
// recovered bank settles them in seconds rather than minutes. An interval
// of 0 runs only the first pass.
func (s *Service) RunResolver(ctx context.Context, interval time.Duration) {
	wake := make(chan struct{}, 1)
	if interval > 0 {
		s.Bank.OnAvailable(func(bank string) {
			if ctx.Err() != nil {
				return
			}
			if err := s.dueAt(ctx, bank); err != nil && ctx.Err() == nil {
				s.log().Warn("make payments due after a bank recovered", "gateway", bank, "err", err)
			}
			select {
			case wake <- struct{}{}:
			default:
			}
		})
	}
	for {
		if _, err := s.Resolve(ctx); err != nil && ctx.Err() == nil {
			s.log().Error("resolve pass", "err", err)
		}
		if interval <= 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		case <-wake:
		}
	}
}

// dueAt makes every payment waiting on bank due now.
func (s *Service) dueAt(ctx context.Context, bank string) error {
	now := ts(s.now())
	return s.DB.Update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE payments SET resolve_after = ? WHERE pending_op <> '' AND gateway = ? AND resolve_after > ?`,
			now, bank, now)
		return err
	})
}
