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
	from := p.Status
	// The bank has decided: the error of the online attempt that sent the
	// payment offline is stale.
	p.Gateway, p.BankAuthID, p.LastError = f.Gateway, f.Auth.ID, ""
	detail := "forwarded"
	if f.DeclineCode != "" {
		p.Status, p.DeclineCode = DeclinedAfterForward, f.DeclineCode
		detail = "declined after forward: " + f.DeclineCode
	} else {
		p.AuthCode, p.AuthorizedAmount, p.CapturedAmount = f.Auth.AuthCode, f.Auth.Amount, f.Auth.CapturedAmount
		p.Status = Authorized
		if p.Capture {
			p.Status = Captured
		}
	}
	if err := save(tx, &p, from, detail, f.Now); err != nil {
		return err
	}
	_, err = settleOrder(tx, p.OrderID, f.Now)
	return err
}
