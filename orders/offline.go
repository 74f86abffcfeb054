package orders

import (
	"database/sql"
	"time"
)

// Offline is store-and-forward as orders sees it; saf.Queue implements it.
// Both methods run inside the caller's write transaction, so a payment's
// status and its queue record always change together.
type Offline interface {
	// Admit queues r if the offline rules allow it, or returns an *Error
	// (offline_limit_exceeded, ...) and queues nothing.
	Admit(tx *sql.Tx, r OfflineRecord) error
	// Cancel takes a payment out of the queue before it is forwarded (a
	// void). It returns an *Error when the record is already being
	// forwarded or was forwarded.
	Cancel(tx *sql.Tx, paymentID string, now time.Time) error
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
	Sealed      []byte
	CreatedAt   time.Time
}
