package orders

import (
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"storepay/migrations"
)

type queryer = migrations.Queryer

func ts(t time.Time) string { return migrations.FormatTime(t) }

func parseTS(s string) time.Time {
	t, _ := migrations.ParseTime(s)
	return t
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

const orderCols = `id, status, channel, currency, lines, total_amount, paid_amount, terminal_id, created_at, updated_at`

func scanOrder(row interface{ Scan(...any) error }) (Order, error) {
	var o Order
	var lines, created, updated string
	err := row.Scan(&o.ID, &o.Status, &o.Channel, &o.Currency, &lines, &o.TotalAmount, &o.PaidAmount,
		&o.TerminalID, &created, &updated)
	if err != nil {
		return Order{}, err
	}
	if err := json.Unmarshal([]byte(lines), &o.Lines); err != nil {
		return Order{}, fmt.Errorf("order %s lines: %w", o.ID, err)
	}
	o.CreatedAt, o.UpdatedAt = parseTS(created), parseTS(updated)
	return o, nil
}

func getOrder(q queryer, id string) (Order, error) {
	o, err := scanOrder(q.QueryRow(`SELECT `+orderCols+` FROM orders WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Order{}, errf(KindNotFound, "order_not_found", "no order %s", id)
	}
	return o, err
}

func insertOrder(tx *sql.Tx, o Order, opKey, opHash string) error {
	_, err := tx.Exec(`INSERT INTO orders (`+orderCols+`, op_key, op_hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)`,
		o.ID, o.Status, o.Channel, o.Currency, mustJSON(o.Lines), o.TotalAmount, o.PaidAmount,
		o.TerminalID, ts(o.CreatedAt), ts(o.UpdatedAt), nullable(opKey), opHash)
	return err
}

const paymentCols = `id, order_id, method, status, mode, gateway, amount, tip_amount, authorized_amount,
	captured_amount, captured_at, refunded_amount, currency, capture, auth_code, decline_code, bank_auth_id,
	card_brand, card_bin, card_last4, card_fingerprint, card_sealed, terminal_id, coalesce(op_key, ''), op_hash,
	pending_op, pending_amount, pending_tip, pending_key, pending_op_key, key_op, pending_since,
	resolve_attempts, resolve_after, last_error, last_error_code, lease_owner, lease_until, created_at, updated_at`

func scanPayment(row interface{ Scan(...any) error }) (Payment, error) {
	var p Payment
	var since, after, created, updated, capturedAt, leaseUntil string
	err := row.Scan(&p.ID, &p.OrderID, &p.Method, &p.Status, &p.Mode, &p.Gateway, &p.Amount, &p.TipAmount,
		&p.AuthorizedAmount, &p.CapturedAmount, &capturedAt, &p.RefundedAmount, &p.Currency, &p.Capture, &p.AuthCode,
		&p.DeclineCode, &p.BankAuthID, &p.CardBrand, &p.cardBin, &p.CardLast4, &p.Fingerprint, &p.sealed, &p.TerminalID,
		&p.opKey, &p.opHash, &p.PendingOp, &p.pendingAmount, &p.pendingTip, &p.pendingKey, &p.pendingOpKey, &p.keyOp, &since,
		&p.resolveAttempts, &after, &p.LastError, &p.LastErrorCode, &p.leaseOwner, &leaseUntil, &created, &updated)
	if err != nil {
		return Payment{}, err
	}
	p.pendingSince, p.resolveAfter = parseTS(since), parseTS(after)
	p.CapturedAt, p.leaseUntil = parseTS(capturedAt), parseTS(leaseUntil)
	p.CreatedAt, p.UpdatedAt = parseTS(created), parseTS(updated)
	return p, nil
}

func getPayment(q queryer, id string) (Payment, error) {
	p, err := scanPayment(q.QueryRow(`SELECT `+paymentCols+` FROM payments WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Payment{}, errf(KindNotFound, "payment_not_found", "no payment %s", id)
	}
	return p, err
}

// paymentByOpKey finds the payment a request created, if it did.
func paymentByOpKey(q queryer, opKey string) (Payment, bool, error) {
	if opKey == "" {
		return Payment{}, false, nil
	}
	// Almost always absent: probe the unique index before loading a row.
	var id string
	err := q.QueryRow(`SELECT id FROM payments WHERE op_key = ?`, opKey).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return Payment{}, false, nil
	}
	if err != nil {
		return Payment{}, false, err
	}
	p, err := getPayment(q, id)
	return p, err == nil, err
}

// getOrderHead reads an order without its lines: what a payment needs.
func getOrderHead(q queryer, id string) (Order, error) {
	var o Order
	err := q.QueryRow(`SELECT id, status, currency, total_amount, paid_amount FROM orders WHERE id = ?`, id).
		Scan(&o.ID, &o.Status, &o.Currency, &o.TotalAmount, &o.PaidAmount)
	if errors.Is(err, sql.ErrNoRows) {
		return Order{}, errf(KindNotFound, "order_not_found", "no order %s", id)
	}
	return o, err
}

func queryPayments(q queryer, where string, args ...any) ([]Payment, error) {
	rows, err := q.Query(`SELECT `+paymentCols+` FROM payments `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Payment{}
	for rows.Next() {
		p, err := scanPayment(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// insertPaymentSQL is built once: it is the key of the prepared statement
// the writer's connection keeps.
var insertPaymentSQL = `INSERT INTO payments (` + strings.Replace(paymentCols, "coalesce(op_key, '')", "op_key", 1) +
	`) VALUES (` + strings.Repeat("?,", 39) + `?)`

func insertPayment(tx *sql.Tx, p Payment) error {
	_, err := tx.Exec(insertPaymentSQL,
		p.ID, p.OrderID, p.Method, p.Status, p.Mode, p.Gateway, p.Amount, p.TipAmount, p.AuthorizedAmount,
		p.CapturedAmount, tsOrEmpty(p.CapturedAt), p.RefundedAmount, p.Currency, p.Capture, p.AuthCode, p.DeclineCode, p.BankAuthID,
		p.CardBrand, p.cardBin, p.CardLast4, p.Fingerprint, p.sealed, p.TerminalID, nullable(p.opKey), p.opHash,
		p.PendingOp, p.pendingAmount, p.pendingTip, p.pendingKey, p.pendingOpKey, p.keyOp, tsOrEmpty(p.pendingSince),
		p.resolveAttempts, tsOrEmpty(p.resolveAfter), p.LastError, p.LastErrorCode, p.leaseOwner, tsOrEmpty(p.leaseUntil), ts(p.CreatedAt), ts(p.UpdatedAt))
	return err
}

func tsOrEmpty(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return ts(t)
}

// updatePayment writes every mutable field of p. Only [Service.transition]
// and [Service.note] call it: the state itself changes only through the
// machine.
func updatePayment(tx *sql.Tx, p *Payment) error {
	_, err := tx.Exec(`UPDATE payments SET status=?, mode=?, gateway=?, amount=?, tip_amount=?, authorized_amount=?,
		captured_amount=?, captured_at=?, refunded_amount=?, auth_code=?, decline_code=?, bank_auth_id=?, card_sealed=?,
		pending_op=?, pending_amount=?, pending_tip=?, pending_key=?, pending_op_key=?, key_op=?, pending_since=?,
		resolve_attempts=?, resolve_after=?, last_error=?, last_error_code=?, lease_owner=?, lease_until=?, updated_at=? WHERE id=?`,
		p.Status, p.Mode, p.Gateway, p.Amount, p.TipAmount, p.AuthorizedAmount, p.CapturedAmount,
		tsOrEmpty(p.CapturedAt), p.RefundedAmount, p.AuthCode, p.DeclineCode, p.BankAuthID, p.sealed, p.PendingOp, p.pendingAmount,
		p.pendingTip, p.pendingKey, p.pendingOpKey, p.keyOp, tsOrEmpty(p.pendingSince), p.resolveAttempts,
		tsOrEmpty(p.resolveAfter), p.LastError, p.LastErrorCode, p.leaseOwner, tsOrEmpty(p.leaseUntil), ts(p.UpdatedAt), p.ID)
	return err
}

func insertEvent(tx *sql.Tx, paymentID string, from, to State, ev Event, detail string, at time.Time) error {
	_, err := tx.Exec(`INSERT INTO payment_events (payment_id, from_status, to_status, from_op, to_op, event, detail, at)
		VALUES (?,?,?,?,?,?,?,?)`, paymentID, from.Status, to.Status, from.Op, to.Op, ev, detail, ts(at))
	return err
}

// settleOrder recomputes an order's paid amount from its payments and
// moves it between open and paid accordingly.
func settleOrder(tx *sql.Tx, orderID string, now time.Time) (Order, error) {
	o, err := getOrderHead(tx, orderID)
	if err != nil {
		return Order{}, err
	}
	return settle(tx, o, now)
}

// settle is settleOrder for an order already read in this transaction.
func settle(tx *sql.Tx, o Order, now time.Time) (Order, error) {
	orderID := o.ID
	var paid int64
	if err := tx.QueryRow(`SELECT coalesce(sum(amount), 0) FROM payments WHERE order_id = ? AND status IN `+liveStatuses,
		orderID).Scan(&paid); err != nil {
		return Order{}, err
	}
	status := o.Status
	switch {
	case status == OrderOpen && paid >= o.TotalAmount:
		status = OrderPaid
	case status == OrderPaid && paid < o.TotalAmount:
		status = OrderOpen
	}
	if paid == o.PaidAmount && status == o.Status {
		return o, nil
	}
	o.PaidAmount, o.Status, o.UpdatedAt = paid, status, now
	_, err := tx.Exec(`UPDATE orders SET paid_amount=?, status=?, updated_at=? WHERE id=?`, paid, status, ts(now), orderID)
	return o, err
}

// liveStatuses are the statuses in which a payment covers part of its
// order (authorized, captured, stored, refunded after capture);
// reservingStatuses add pending: a payment in flight holds its share of
// the balance, so that two terminals cannot both pay the remainder.
const (
	liveStatuses      = `('authorized', 'captured', 'stored', 'partially_refunded', 'refunded')`
	reservingStatuses = `('pending', 'authorized', 'captured', 'stored', 'partially_refunded', 'refunded')`
)

const refundCols = `id, payment_id, amount, status, bank_refund_id, created_at`

func getRefunds(q queryer, paymentID string) ([]Refund, error) {
	rows, err := q.Query(`SELECT `+refundCols+` FROM refunds WHERE payment_id = ? ORDER BY created_at`, paymentID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Refund
	for rows.Next() {
		var r Refund
		var created string
		if err := rows.Scan(&r.ID, &r.PaymentID, &r.Amount, &r.Status, &r.BankRefundID, &created); err != nil {
			return nil, err
		}
		r.CreatedAt = parseTS(created)
		out = append(out, r)
	}
	return out, rows.Err()
}
