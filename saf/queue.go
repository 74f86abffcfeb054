package saf

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"storepay/gateway"
	"storepay/migrations"
	"storepay/orders"
)

// Status of a record, as the contract names them.
type Status string

// Record statuses.
const (
	Queued     Status = "queued"
	Forwarding Status = "forwarding"
	Held       Status = "held"
	Forwarded  Status = "forwarded"
	Declined   Status = "declined"
	Expired    Status = "expired"
)

// outstanding reports whether a record in status s still owes a forward.
func (s Status) outstanding() bool {
	return s == Queued || s == Forwarding || s == Held || s == Expired
}

// Rules are the offline rules a payment must meet to be accepted without
// a bank. Amounts are minor units.
type Rules struct {
	// FloorLimit is the largest single payment (amount + tip) accepted.
	FloorLimit int64
	// TotalLimit caps what the queue may hold unforwarded at once.
	TotalLimit int64
	// MaxAge is how long a record may wait before it is expired and
	// flagged for a manager.
	MaxAge time.Duration
	// Per card (by fingerprint), over VelocityWindow (default 24h): at
	// most VelocityCount unforwarded offline payments and VelocityAmount
	// in total. Zero is no limit, the default: the contract's offline
	// rules are the floor and total limits, and a store that wants the
	// stricter per-card rule sets it (a test card paying every lane's
	// orders must not be refused by a rule nobody configured).
	VelocityCount  int
	VelocityAmount int64
	VelocityWindow time.Duration
	// HotCards are cards refused offline, written masked as the first six
	// and last four digits ("400000******9979"): a hot list never needs a
	// full card number.
	HotCards []string
	// Currency is the ISO 4217 currency the amount limits (FloorLimit,
	// TotalLimit, VelocityAmount, ForwardPolicy.GuardMaxAmount) are
	// written in, so that people read them as money. It changes no rule:
	// the rules compare minor units whatever a payment's currency, as the
	// contract's offline rules say. Empty: the limits are shown as numbers
	// of minor units (orders.FormatMoney), never with a guessed decimal
	// point.
	Currency string
}

// Money writes an amount of the rules' limits for people (see Currency).
func (r Rules) Money(amount int64) string { return orders.FormatMoney(amount, r.Currency) }

func (r Rules) withDefaults() Rules {
	if r.VelocityWindow <= 0 {
		r.VelocityWindow = 24 * time.Hour
	}
	if r.MaxAge <= 0 {
		r.MaxAge = 72 * time.Hour
	}
	return r
}

// Record is one payment in the queue, as the manager API shows it.
type Record struct {
	ID        string `json:"id"`
	PaymentID string `json:"payment_id"`
	Gateway   string `json:"gateway"`
	Amount    int64  `json:"amount"`
	Currency  string `json:"currency"`
	Status    Status `json:"status"`
	Attempts  int    `json:"attempts"`
	// LastError is a sentence a manager can act on, LastErrorCode its
	// stable code (see gateway.Explain); the raw error is only logged.
	LastError     string    `json:"last_error"`
	LastErrorCode string    `json:"last_error_code,omitempty"`
	CreatedAt     time.Time `json:"created_at"`
	NextAttemptAt time.Time `json:"next_attempt_at"`
	UpdatedAt     time.Time `json:"updated_at"`
	TerminalID    string    `json:"terminal_id"`
	CardLast4     string    `json:"card_last4"`
	BankAuthID    string    `json:"bank_auth_id,omitempty"`
	DeclineCode   string    `json:"decline_code,omitempty"`
	ForwardedAt   time.Time `json:"forwarded_at,omitzero"`

	idemKey         string
	capture         bool
	advice          bool
	expireExempt    bool
	fingerprint     string
	sealed          []byte
	lastUnavailable bool
}

// Payments is what the queue needs from orders: recording a bank's answer
// to a forwarded payment in the queue's own transaction.
// orders.Service implements it.
type Payments interface {
	ApplyForward(tx *sql.Tx, f orders.ForwardResult) error
}

// Bank is what the forwarder needs from the banks; gateway.Router
// implements it.
type Bank interface {
	AuthorizeAt(ctx context.Context, bank string, req gateway.AuthRequest) (gateway.Authorization, error)
	Find(ctx context.Context, bank string, by gateway.Lookup) ([]gateway.Authorization, error)
	Preferred() string
	Banks() []string
	OnAvailable(fn func(bank string))
}

// Queue is the store-and-forward queue and its forwarder.
type Queue struct {
	DB       *migrations.DB
	Vault    *gateway.Vault
	Bank     Bank
	Payments Payments
	Rules    Rules
	Forward  ForwardPolicy
	Log      *slog.Logger
	Now      func() time.Time
	// NewID makes record ids from a prefix; Jitter a random number in
	// [0, n) for backoffs; Sleep waits d or until ctx ends. Nil: UUIDv7,
	// math/rand/v2 and a timer. The simulator replaces them to drive time
	// and randomness from its seed.
	NewID  func(prefix string) string
	Jitter func(n int64) int64
	Sleep  func(ctx context.Context, d time.Duration) error

	hotOnce sync.Once
	hot     map[string]bool // first6+last4 of hot cards

	fwdOnce   sync.Once
	fwd       *forwarder
	unobserve func() error
}

func (q *Queue) newID(prefix string) string {
	if q.NewID != nil {
		return q.NewID(prefix)
	}
	return prefix + strings.ReplaceAll(uuid.Must(uuid.NewV7()).String(), "-", "")
}

func (q *Queue) jitter(n int64) int64 {
	if n <= 0 {
		return 0
	}
	if q.Jitter != nil {
		return q.Jitter(n)
	}
	return rand.Int64N(n)
}

func (q *Queue) sleep(ctx context.Context, d time.Duration) error {
	if q.Sleep != nil {
		return q.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

var _ orders.Offline = (*Queue)(nil)

func (q *Queue) now() time.Time {
	if q.Now != nil {
		return q.Now().UTC()
	}
	return time.Now().UTC()
}

func (q *Queue) log() *slog.Logger {
	if q.Log != nil {
		return q.Log
	}
	return slog.Default()
}

func refuse(code, format string, args ...any) *orders.Error {
	return &orders.Error{Kind: orders.KindInvalid, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Admit queues a payment if the offline rules allow it; it runs in the
// payment's write transaction. Refusals are *orders.Error whose Code the
// payment is declined with: offline_limit_exceeded (floor or total
// limit), offline_velocity_exceeded, offline_card_blocked.
func (q *Queue) Admit(tx *sql.Tx, r orders.OfflineRecord) error {
	rules := q.Rules.withDefaults()
	if r.Amount > rules.FloorLimit {
		return refuse("offline_limit_exceeded", "%d is over the offline floor limit %d", r.Amount, rules.FloorLimit)
	}
	hot := q.hotCard(r.Bin, r.Last4)
	if !hot && len(r.Bin) == 6 {
		var n int
		if err := tx.QueryRow(`SELECT count(*) FROM hot_cards WHERE entry = ?`, r.Bin+r.Last4).Scan(&n); err != nil {
			return err
		}
		hot = n > 0
	}
	if hot {
		return refuse("offline_card_blocked", "this card is on the hot list and cannot be accepted offline")
	}
	var blocked int
	if err := tx.QueryRow(`SELECT count(*) FROM saf_blocked_cards WHERE fingerprint = ?`, r.Fingerprint).Scan(&blocked); err != nil {
		return err
	}
	if blocked > 0 {
		return refuse("offline_card_blocked", "a bank declined this card after an earlier offline payment")
	}
	var count, amount int64
	if err := tx.QueryRow(`SELECT count, amount FROM saf_outstanding WHERE id = 1`).Scan(&count, &amount); err != nil {
		return err
	}
	if amount+r.Amount > rules.TotalLimit {
		return refuse("offline_limit_exceeded", "the offline queue would hold %d, over its total limit %d", amount+r.Amount, rules.TotalLimit)
	}
	if rules.VelocityCount > 0 || rules.VelocityAmount > 0 {
		var cardCount, cardAmount int64
		if err := tx.QueryRow(`SELECT count(*), coalesce(sum(amount), 0) FROM saf_records
			WHERE fingerprint = ? AND status IN ('queued', 'forwarding', 'held', 'expired') AND created_at >= ?`,
			r.Fingerprint, migrations.FormatTime(r.CreatedAt.Add(-rules.VelocityWindow))).Scan(&cardCount, &cardAmount); err != nil {
			return err
		}
		if (rules.VelocityCount > 0 && cardCount+1 > int64(rules.VelocityCount)) ||
			(rules.VelocityAmount > 0 && cardAmount+r.Amount > rules.VelocityAmount) {
			return refuse("offline_velocity_exceeded", "this card already has %d offline payments (%d) waiting", cardCount, cardAmount)
		}
	}
	now := migrations.FormatTime(r.CreatedAt)
	_, err := tx.Exec(`INSERT INTO saf_records (id, payment_id, idem_key, gateway, terminal_id, amount, currency, capture,
		advice, fingerprint, card_last4, card_sealed, status, created_at, next_attempt_at, updated_at)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,'queued',?,?,?)`,
		q.newID("saf_"), r.PaymentID, r.Key, r.Gateway, r.TerminalID,
		r.Amount, r.Currency, r.Capture, r.Gateway == "", r.Fingerprint, r.Last4, r.Sealed, now, now, now)
	if err != nil {
		return fmt.Errorf("queue %s: %w", r.PaymentID, err)
	}
	if err := addOutstanding(tx, 1, r.Amount); err != nil {
		return err
	}
	admitted.Add(context.Background(), 1)
	q.wake()
	return nil
}

func addOutstanding(tx *sql.Tx, count, amount int64) error {
	_, err := tx.Exec(`UPDATE saf_outstanding SET count = count + ?, amount = amount + ? WHERE id = 1`, count, amount)
	return err
}

// hotCard matches the configured hot list by first six and last four.
// Admit also reads the hot_cards table, which headquarters fills.
func (q *Queue) hotCard(bin, last4 string) bool {
	q.hotOnce.Do(func() {
		q.hot = map[string]bool{}
		for _, h := range q.Rules.HotCards {
			h = strings.TrimSpace(h)
			if len(h) >= 10 {
				q.hot[h[:6]+h[len(h)-4:]] = true
			}
		}
	})
	return len(bin) == 6 && q.hot[bin+last4]
}

// ValidHotCard reports whether s is a masked hot-list entry: six digits,
// a mask, four digits ("400000******9979").
func ValidHotCard(s string) bool {
	if len(s) < 12 || len(s) > 19 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		digit := c >= '0' && c <= '9'
		switch {
		case i < 6 || i >= len(s)-4:
			if !digit {
				return false
			}
		case c != '*':
			return false
		}
	}
	return true
}

// Cancel takes a queued payment out of the queue (a void before it is
// forwarded). A record being forwarded cannot be cancelled:
// payment_in_progress. A record pinned to a bank may have been approved
// there; its bank is returned so that the payment reverses it.
func (q *Queue) Cancel(tx *sql.Tx, paymentID string, now time.Time) (string, error) {
	r, err := getRecordBy(tx, "payment_id", paymentID)
	if err != nil {
		return "", err
	}
	switch {
	case r.Status == Forwarding:
		return "", &orders.Error{Kind: orders.KindConflict, Code: "payment_in_progress", Transient: true,
			Message: "this stored payment is being forwarded; retry later"}
	case !r.Status.outstanding():
		return "", &orders.Error{Kind: orders.KindConflict, Code: "payment_not_voidable", Message: "the payment was already forwarded"}
	case q.reachable(&r) != nil:
		// Its reversal could not be made: the record stays, held, for a
		// manager to settle with that bank.
		return "", &orders.Error{Kind: orders.KindConflict, Code: "payment_not_voidable",
			Message: "this payment may be held by " + r.Gateway + ", which is not configured; a manager must settle it with that bank"}
	}
	if _, err := tx.Exec(`DELETE FROM saf_attempts WHERE record_id = ?`, r.ID); err != nil {
		return "", err
	}
	if _, err := tx.Exec(`DELETE FROM saf_records WHERE id = ?`, r.ID); err != nil {
		return "", err
	}
	return r.Gateway, addOutstanding(tx, -1, -r.Amount)
}

// noteError keeps err as the record's last error, told as a manager
// reads it (gateway.Explain); nil clears it.
func (r *Record) noteError(err error) {
	x := gateway.Explain(err)
	r.LastError, r.LastErrorCode = x.Text, x.Code
}
