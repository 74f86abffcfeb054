package orders

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"storepay/gateway"
)

// neverSentGrace is how long an authorization that never reached a bank
// (storepay stopped between writing it ahead and calling the bank) waits
// for its terminal to repeat the request before it is declined.
const neverSentGrace = time.Minute

// Resolve runs one resolution pass, at the Service's clock: every payment
// with a bank operation written ahead whose lease nobody holds (after a
// crash, all of them) and whose next attempt is due is repeated at its
// bank with the same key (or looked up) until the bank gives a definitive
// answer; one the bank does not answer now is retried later with
// backoff. It returns how many payments are still unresolved.
//
// Resolve is the resolver's step: [Service.RunResolver] calls it on a
// timer, tests and the simulator call it themselves.
func (s *Service) Resolve(ctx context.Context) (int, error) {
	now := s.now()
	ps, err := queryPayments(s.DB.ReadAt(ctx), `WHERE pending_op <> '' ORDER BY pending_since, id`)
	if err != nil {
		return 0, err
	}
	remaining := 0
	for _, p := range ps {
		if ctx.Err() != nil {
			return remaining, ctx.Err()
		}
		if p.resolveAfter.After(now) || s.leased(p, now) {
			remaining++
			continue
		}
		q, err := s.resolveOne(ctx, p.ID, now)
		if err != nil {
			s.log().WarnContext(ctx, "resolve payment", "payment_id", p.ID, "op", p.PendingOp, "err", err)
		}
		if q.PendingOp != OpNone || err != nil {
			remaining++
		}
	}
	return remaining, nil
}

// resolveOne takes a payment's lease and works on its operation. It
// returns the payment as it left it.
func (s *Service) resolveOne(ctx context.Context, id string, now time.Time) (Payment, error) {
	var p Payment
	claimed := false
	err := s.DB.Update(ctx, func(tx *sql.Tx) error {
		var err error
		if p, err = getPayment(tx, id); err != nil {
			return err
		}
		// Re-read: a live request may have finished or taken it since.
		if p.PendingOp == OpNone || s.leased(p, now) || p.resolveAfter.After(now) {
			return nil
		}
		claimed = true
		return s.claim(tx, &p, s.leaseFor(now, s.authBudget()+lookupBudget))
	})
	if err != nil || !claimed {
		return p, err
	}
	defer s.unclaim(ctx, id, p.leaseOwner)
	resolutions.Add(ctx, 1, opAttr(string(p.PendingOp)))
	switch p.PendingOp {
	case OpAuthorize:
		return s.resolveAuth(ctx, p, now)
	case OpReverse:
		return s.reverseUnknown(ctx, p)
	default:
		return s.runOp(ctx, p, true, true, nil)
	}
}

// unclaim lets go of a lease the resolver still holds after its attempt
// (one that ended without a transition, which releases it by itself).
func (s *Service) unclaim(ctx context.Context, id, token string) {
	err := s.DB.Update(context.WithoutCancel(ctx), func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE payments SET lease_owner = '', lease_until = '' WHERE id = ? AND lease_owner = ?`, id, token)
		return err
	})
	if err != nil {
		s.log().WarnContext(ctx, "release a payment's lease; it expires by itself", "payment_id", id, "err", err)
	}
}

// resolveAuth resolves an authorization whose outcome is unknown, or
// which was written ahead and never sent.
func (s *Service) resolveAuth(ctx context.Context, p Payment, now time.Time) (Payment, error) {
	if p.Gateway == "" {
		if now.Sub(p.pendingSince) < neverSentGrace {
			return p, nil
		}
		return s.settleAuth(ctx, p, gateway.Authorization{}, errNeverSent)
	}
	card, err := s.Vault.Open(p.ID, p.sealed)
	if err != nil {
		return p, err
	}
	decided := func(a gateway.Authorization) bool {
		return a.Status == gateway.StatusApproved || a.Status == gateway.StatusDeclined
	}
	lookups := !Planted(BugNoLookupForKeptFailure)
	if (p.resolveAttempts >= 2 || s.stale(p)) && lookups {
		// Repeats have not told twice, or the key may be gone: the bank's
		// records go first (see runOp), and an old authorization is not
		// repeated while the bank cannot be asked.
		a, ok, err := s.lookup(ctx, p, decided)
		switch {
		case ok:
			return s.settleAuth(ctx, p, a, nil)
		case err != nil && s.stale(p) && !gateway.NoLookup(err):
			return s.settleAuth(ctx, p, gateway.Authorization{}, &gateway.Error{Kind: gateway.KindUnknown, Gateway: p.Gateway,
				Err: fmt.Errorf("its key may be gone at the bank, which cannot be asked what it holds: %w", err)})
		}
	}
	actx, cancel := context.WithTimeout(ctx, s.authBudget())
	defer cancel()
	auth, err := s.Bank.AuthorizeAt(actx, p.Gateway, s.authRequest(p, card))
	if e := gateway.AsError(err); e != nil && e.Kind == gateway.KindUnknown && p.resolveAttempts < 2 && lookups {
		// Still unknown: the bank's records may say what it did.
		if a, ok := s.heldAtBank(ctx, p, decided); ok {
			auth, err = a, nil
		}
	}
	return s.settleAuth(ctx, p, auth, unresolved(err, p.Gateway))
}

// errNeverSent marks an authorization that never reached a bank.
var errNeverSent = &gateway.Error{Kind: gateway.KindNotSent}

// settleAuth records what the resolver learnt of an authorization: the
// bank's answer, or another attempt later. Nobody waits for it, so there
// is no offline decision to make.
func (s *Service) settleAuth(ctx context.Context, started Payment, auth gateway.Authorization, callErr error) (Payment, error) {
	now := s.now()
	var p Payment
	err := s.DB.Update(context.WithoutCancel(ctx), func(tx *sql.Tx) error {
		var err error
		if p, err = getPayment(tx, started.ID); err != nil {
			return err
		}
		if p.PendingOp != OpAuthorize || !holds(p, started.leaseOwner) {
			return nil // resolved meanwhile, or taken over
		}
		if callErr == errNeverSent {
			if p.Gateway != "" {
				return nil // a repeat of its terminal sent it meanwhile
			}
			p.DeclineCode = "not_processed"
			return s.transition(tx, &p, move{ev: EvNeverSent, detail: "never sent to a bank"}, now)
		}
		callErr = definite(auth, p.Gateway, callErr)
		m, err := s.authAnswer(&p, auth, p.Gateway, callErr)
		if err != nil {
			return err
		}
		if m.ev == "" {
			s.backoff(&p, now, callErr)
			m = move{ev: EvRetry}
		}
		return s.transition(tx, &p, m, now)
	})
	if err != nil {
		return Payment{}, err
	}
	if p.PendingOp == OpNone {
		s.decided(ctx, p)
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
			if err := s.BankAvailable(ctx, bank); err != nil && ctx.Err() == nil {
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

// BankAvailable makes every payment waiting on bank due now: the bank
// takes calls again.
func (s *Service) BankAvailable(ctx context.Context, bank string) error {
	now := ts(s.now())
	return s.DB.Update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE payments SET resolve_after = ? WHERE pending_op <> '' AND gateway = ? AND resolve_after > ?`,
			now, bank, now)
		return err
	})
}
