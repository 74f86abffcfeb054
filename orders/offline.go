package orders

import (
	"database/sql"
	"fmt"
	"time"

	"storepay/gateway"
)

// Offline is store-and-forward as orders sees it; saf.Queue implements it.
// Both methods run inside the caller's write transaction, so a payment's
// status and its queue record always change together.
type Offline interface {
	// Admit queues r if the offline rules allow it, or returns an *Error
	// (offline_limit_exceeded, ...) and queues nothing.
	Admit(tx *sql.Tx, r OfflineRecord) error
	// Cancel takes a payment out of the queue before it is forwarded (a
	// void). It returns an *Error when the record is being forwarded or
	// was forwarded. pinned is the bank the record was pinned to, where
	// an earlier request for it has an unknown outcome ("" if none): an
	// approval there must still be reversed.
	Cancel(tx *sql.Tx, paymentID string, now time.Time) (pinned string, err error)
}

// OfflineRecord is a card payment accepted without a bank's decision.
type OfflineRecord struct {
	PaymentID  string
	TerminalID string
	// Gateway pins the record to the bank whose outcome is unknown: only
	// a same-key retry there can be sent. Empty means any bank.
	Gateway     string
	Key         string // downstream idempotency key
	Amount      int64  // amount + tip, minor units
	Currency    string
	Capture     bool
	Fingerprint string
	Bin, Last4  string // first six and last four digits, for the hot list
	Sealed      []byte
	CreatedAt   time.Time
}

// ForwardResult is a bank's answer to a payment forwarded from
// store-and-forward.
type ForwardResult struct {
	PaymentID string
	Gateway   string
	// Auth is the bank's authorization (approved, or declined).
	Auth gateway.Authorization
	// DeclineCode, when set, means the bank declined: the payment becomes
	// declined_after_forward.
	DeclineCode string
	Now         time.Time
}

// ApplyForward records a forward's outcome on a stored payment, inside
// the queue's transaction: stored → captured (or authorized for a
// pre-authorization), or stored → declined_after_forward.
func (s *Service) ApplyForward(tx *sql.Tx, f ForwardResult) error {
	p, err := getPayment(tx, f.PaymentID)
	if err != nil {
		return err
	}
	if p.Status != Stored {
		return fmt.Errorf("apply forward to %s: payment is %s, not stored", p.ID, p.Status)
	}
	// The bank has decided: the error of the online attempt that sent the
	// payment offline is stale.
	p.Gateway, p.BankAuthID = f.Gateway, f.Auth.ID
	p.noteError(nil)
	m := move{ev: EvForwardDeclined, detail: "declined after forward: " + f.DeclineCode}
	switch {
	case f.DeclineCode != "":
		p.DeclineCode = f.DeclineCode
	default:
		p.AuthCode, p.AuthorizedAmount, p.CapturedAmount = f.Auth.AuthCode, f.Auth.Amount, f.Auth.CapturedAmount
		m = move{ev: EvForwardedPreauth, detail: "forwarded"}
		if p.Capture {
			m.ev = EvForwardedSale
		}
	}
	return s.transition(tx, &p, m, f.Now)
}

// voidStored takes a stored payment out of the queue. One pinned to a
// bank, where a request for it has an unknown outcome, may be approved
// there: it is voided at once, and the resolver reverses whatever that
// bank holds under the payment's reference, as for an unknown outcome the
// terminal heard as declined.
func (s *Service) voidStored(tx *sql.Tx, p *Payment, detail string, now time.Time) error {
	if s.Offline == nil {
		return errf(KindConflict, "payment_not_voidable", "store-and-forward is not running")
	}
	pinned, err := s.Offline.Cancel(tx, p.ID, now)
	if err != nil {
		return err
	}
	if pinned == "" || Planted(BugVoidPinnedWithoutReverse) {
		return s.transition(tx, p, move{ev: EvStoredVoided, detail: detail}, now)
	}
	p.Gateway = pinned
	return s.transition(tx, p, move{ev: EvPinnedVoided, detail: detail + "; any approval at " + pinned + " is reversed",
		start: &opStart{key: undoKey(p.ID), amount: p.Amount, tip: p.TipAmount}}, now)
}
