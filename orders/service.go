package orders

import (
	"context"
	"database/sql"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"storepay/gateway"
	"storepay/migrations"
)

// Bank is what orders needs from the banks. gateway.Router implements it.
// Every error is classified as a *gateway.Error (see gateway.NothingDone).
type Bank interface {
	// Authorize sends req to the first bank that admits it, moving to the
	// next bank only when a bank provably did nothing. Before its first
	// attempt at any bank other than pinned it calls pin(bank) and goes on
	// only if pin returns nil, so that the bank that may hold the payment
	// is on disk before it is called. It returns the deciding bank's name.
	Authorize(ctx context.Context, req gateway.AuthRequest, pinned string, pin func(bank string) error) (gateway.Authorization, string, error)
	// AuthorizeAt repeats an authorization at one bank with the same key:
	// how an unknown outcome is resolved.
	AuthorizeAt(ctx context.Context, bank string, req gateway.AuthRequest) (gateway.Authorization, error)
	Capture(ctx context.Context, bank string, req gateway.CaptureRequest) (gateway.Authorization, error)
	Reverse(ctx context.Context, bank string, req gateway.ReverseRequest) ([]gateway.Authorization, error)
	Refund(ctx context.Context, bank string, req gateway.RefundRequest) (gateway.Refund, error)
	// Find asks one bank what it holds under a reference or key: how a
	// payment the terminal heard as declined is checked without charging.
	Find(ctx context.Context, bank string, by gateway.Lookup) ([]gateway.Authorization, error)
	// Settlement returns a bank's settlement report (CSV) of a closed
	// business date: how a refund behind a kept failure is found.
	Settlement(ctx context.Context, bank, date string) ([]byte, error)
	// DeliversAdvices reports whether bank's protocol delivers captures
	// and voids as advices (ISO 8583): once written ahead they are
	// repeated until answered, even when the bank said it did nothing.
	DeliversAdvices(bank string) bool
	// Preferred is the bank an authorization would go to now, or "" when
	// no bank takes traffic (every breaker open).
	Preferred() string
	// OnAvailable registers fn to be called whenever a bank starts
	// admitting traffic again.
	OnAvailable(fn func(bank string))
}

// Service runs orders and payments. Create it with its fields set; the
// zero values of the optional ones are safe defaults.
type Service struct {
	DB    *migrations.DB
	Bank  Bank
	Vault *gateway.Vault
	// Offline, when set, lets card payments be accepted without a bank
	// (store-and-forward). Without it, a payment no bank decides is
	// declined with bank_unavailable.
	Offline Offline
	Log     *slog.Logger
	Now     func() time.Time
	// AuthBudget bounds the whole online decision of a card payment; the
	// contract promises a decision within 30 s. Default 25 s.
	AuthBudget time.Duration
	// OpBudget bounds a capture, void or refund at the bank. Default 20 s.
	OpBudget time.Duration
	// NewID makes the ids of orders, payments and refunds from a prefix.
	// Nil: the prefix and a UUIDv7. The simulator makes them from its seed.
	NewID func(prefix string) string
	// Jitter returns a random number in [0, n) for backoffs. Nil:
	// math/rand/v2.
	Jitter func(n int64) int64

	incOnce sync.Once
	inc     string // this process's incarnation: the owner of its leases
	leases  atomic.Int64

	goneMu sync.Mutex
	gone   map[string]time.Time // lease tokens whose holders returned, until their lease ends

	reportsMu sync.Mutex
	reports   map[string][]reportRow // refund rows of closed days' settlement reports
}

// incarnation names this Service's life: leases it writes carry it, and
// a lease with another is a dead process's.
func (s *Service) incarnation() string {
	s.incOnce.Do(func() { s.inc = newID("inc_") })
	return s.inc
}

func (s *Service) newID(prefix string) string {
	if s.NewID != nil {
		return s.NewID(prefix)
	}
	return newID(prefix)
}

func (s *Service) jitter(n int64) int64 {
	if n <= 0 {
		return 0
	}
	if s.Jitter != nil {
		return s.Jitter(n)
	}
	return rand.Int64N(n)
}

func (s *Service) now() time.Time {
	if s.Now != nil {
		return s.Now().UTC()
	}
	return time.Now().UTC()
}

func (s *Service) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func (s *Service) authBudget() time.Duration {
	if s.AuthBudget > 0 {
		return s.AuthBudget
	}
	return 25 * time.Second
}

func (s *Service) opBudget() time.Duration {
	if s.OpBudget > 0 {
		return s.OpBudget
	}
	return 20 * time.Second
}

func newID(prefix string) string {
	return prefix + strings.ReplaceAll(uuid.Must(uuid.NewV7()).String(), "-", "")
}

// NewOrder is a request to open an order.
type NewOrder struct {
	Channel    Channel
	Currency   string
	Lines      []Line
	TerminalID string
	// Request is its idempotency: a repeat returns the order the first
	// one created.
	Request
}

// Limits that keep every sum far inside int64.
const (
	maxLines    = 500
	maxQuantity = 1_000_000
	maxAmount   = 1_000_000_000_000 // per unit or per payment, minor units
)

// CreateOrder opens an order. Errors: invalid_request (400) for missing
// or out-of-range fields, invalid_currency (422).
func (s *Service) CreateOrder(ctx context.Context, req NewOrder) (Order, error) {
	switch req.Channel {
	case WalkIn, Phone, OnlinePickup:
	default:
		return Order{}, errf(KindBadRequest, "invalid_request", "channel must be walk_in, phone or online_pickup")
	}
	if !ValidCurrency(req.Currency) {
		return Order{}, errf(KindInvalid, "invalid_currency", "currency %q is not an ISO 4217 code", req.Currency)
	}
	if len(req.Lines) == 0 || len(req.Lines) > maxLines {
		return Order{}, errf(KindBadRequest, "invalid_request", "an order has 1 to %d lines", maxLines)
	}
	var total int64
	for i, l := range req.Lines {
		if strings.TrimSpace(l.SKU) == "" {
			return Order{}, errf(KindBadRequest, "invalid_request", "lines[%d].sku is required", i)
		}
		if l.Quantity < 1 || l.Quantity > maxQuantity {
			return Order{}, errf(KindBadRequest, "invalid_request", "lines[%d].quantity is out of range: it must be 1 to %d", i, maxQuantity)
		}
		if l.UnitAmount < 0 || l.UnitAmount > maxAmount {
			return Order{}, errf(KindBadRequest, "invalid_request", "lines[%d].unit_amount is out of range: it must be 0 to %d", i, int64(maxAmount))
		}
		// Each product fits in int64 (quantity and unit amount are
		// bounded); the running total is kept within maxAmount so that the
		// sum never wraps.
		if total += l.Quantity * l.UnitAmount; total > maxAmount {
			return Order{}, errf(KindInvalid, "invalid_amount", "the order's total must be at most %d minor units", int64(maxAmount))
		}
	}
	if total <= 0 {
		return Order{}, errf(KindInvalid, "invalid_amount", "the order's total must be positive")
	}
	now := s.now()
	o := Order{ID: s.newID("ord_"), Status: OrderOpen, Channel: req.Channel, Currency: req.Currency,
		Lines: req.Lines, TotalAmount: total, TerminalID: req.TerminalID, CreatedAt: now, UpdatedAt: now}
	err := s.DB.Update(ctx, func(tx *sql.Tx) error {
		if req.Key != "" {
			var id, hash string
			err := tx.QueryRow(`SELECT id, op_hash FROM orders WHERE op_key = ?`, req.Key).Scan(&id, &hash)
			if err == nil {
				first, err := getOrder(tx, id)
				if err != nil {
					return err
				}
				// As for a payment (see Pay): hashes under one key differ,
				// or the order itself differs from the request.
				if req.Hash != "" && hash != req.Hash && (SameHashKey(hash, req.Hash) ||
					first.Channel != req.Channel || first.Currency != req.Currency || first.TotalAmount != total) {
					return errReuse
				}
				o = first
				return nil
			}
			if err != sql.ErrNoRows {
				return err
			}
		}
		if err := insertOrder(tx, o, req.Key, req.Hash); err != nil {
			return err
		}
		if req.Reply != nil {
			return req.Reply.Store(tx, o)
		}
		return nil
	})
	if err != nil {
		return Order{}, err
	}
	return o, nil
}

// Order returns an order with its payments. Errors: order_not_found.
func (s *Service) Order(ctx context.Context, id string) (Order, error) {
	var o Order
	err := s.DB.View(ctx, func(tx *sql.Tx) error {
		var err error
		if o, err = getOrder(tx, id); err != nil {
			return err
		}
		o.Payments, err = queryPayments(tx, `WHERE order_id = ? ORDER BY created_at, id`, id)
		return err
	})
	return o, err
}

// Deliver hands a paid order to the customer. Delivering a delivered order
// again is a no-op. Errors: order_not_found, order_not_paid (409).
func (s *Service) Deliver(ctx context.Context, id string) (Order, error) {
	var o Order
	err := s.DB.Update(ctx, func(tx *sql.Tx) error {
		var err error
		if o, err = getOrder(tx, id); err != nil {
			return err
		}
		switch o.Status {
		case OrderDelivered:
			return nil
		case OrderPaid:
		default:
			return errf(KindConflict, "order_not_paid", "order %s is %s; only a paid order can be delivered", id, o.Status)
		}
		o.Status, o.UpdatedAt = OrderDelivered, s.now()
		_, err = tx.Exec(`UPDATE orders SET status=?, updated_at=? WHERE id=?`, o.Status, ts(o.UpdatedAt), id)
		return err
	})
	if err != nil {
		return Order{}, err
	}
	return s.Order(ctx, id)
}

// Payment returns one payment. Errors: payment_not_found.
func (s *Service) Payment(ctx context.Context, id string) (Payment, error) {
	return getPayment(s.DB.ReadAt(ctx), id)
}

// PaymentFilter selects payments; empty fields match everything.
type PaymentFilter struct {
	TerminalID string
	Status     Status
	OrderID    string
	Last4      string
	Limit      int
	Offset     int
}

// Payments lists payments newest first (at most Limit, default 100).
func (s *Service) Payments(ctx context.Context, f PaymentFilter) ([]Payment, error) {
	var where []string
	var args []any
	for _, c := range []struct{ col, val string }{
		{"terminal_id", f.TerminalID}, {"status", string(f.Status)}, {"order_id", f.OrderID}, {"card_last4", f.Last4},
	} {
		if c.val != "" {
			where = append(where, c.col+" = ?")
			args = append(args, c.val)
		}
	}
	q := ""
	if len(where) > 0 {
		q = "WHERE " + strings.Join(where, " AND ")
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	args = append(args, f.Limit, max(f.Offset, 0))
	return queryPayments(s.DB.ReadAt(ctx), q+" ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?", args...)
}

// Events returns a payment's history, oldest first: each transition of
// the payment machine, with its event.
func (s *Service) Events(ctx context.Context, paymentID string) ([]Change, error) {
	rows, err := s.DB.Read().QueryContext(ctx, `SELECT from_status, to_status, from_op, to_op, event, detail, at
		FROM payment_events WHERE payment_id = ? ORDER BY seq`, paymentID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Change
	for rows.Next() {
		var e Change
		var at string
		if err := rows.Scan(&e.From, &e.To, &e.FromOp, &e.ToOp, &e.Event, &e.Detail, &at); err != nil {
			return nil, err
		}
		e.At = parseTS(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// Refunds returns a payment's refunds, oldest first.
func (s *Service) Refunds(ctx context.Context, paymentID string) ([]Refund, error) {
	return getRefunds(s.DB.ReadAt(ctx), paymentID)
}

// letGo records that the holder of token has returned. Its lease is
// cleared by the transaction that writes the outcome; when that write
// failed (a full disk, an I/O error) the lease would still bind the
// request's repeat, answered idempotency_key_in_use until it ran out,
// though nothing runs. Knowing here that its holder is gone, leased lets
// the repeat (or the resolver) resume the operation at once, under the
// same bank key, as after a crash. Only this incarnation's holders are
// known here, which is all leased needs: another incarnation's leases
// bind nobody. Entries live until their lease would have ended.
func (s *Service) letGo(token string, until time.Time) {
	if token == "" {
		return
	}
	now := s.now()
	s.goneMu.Lock()
	defer s.goneMu.Unlock()
	if s.gone == nil {
		s.gone = map[string]time.Time{}
	}
	if len(s.gone) >= 256 {
		for t, u := range s.gone {
			if !now.Before(u) {
				delete(s.gone, t)
			}
		}
	}
	s.gone[token] = until
}

// returned reports whether the holder of token has returned (letGo).
func (s *Service) returned(token string) bool {
	s.goneMu.Lock()
	defer s.goneMu.Unlock()
	_, ok := s.gone[token]
	return ok
}
