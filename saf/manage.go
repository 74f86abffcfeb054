package saf

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"storepay/devices"
	"storepay/migrations"
	"storepay/orders"
)

// Filter selects records for the manager; empty fields match everything.
type Filter struct {
	Status  Status
	Gateway string
	Limit   int // default 100, at most 1000
	Offset  int
}

// List returns records, oldest first (the order they are owed).
func (q *Queue) List(ctx context.Context, f Filter) ([]Record, error) {
	where := []string{"1=1"}
	var args []any
	if f.Status != "" {
		where = append(where, "status = ?")
		args = append(args, f.Status)
	}
	if f.Gateway != "" {
		where = append(where, "gateway = ?")
		args = append(args, f.Gateway)
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	args = append(args, f.Limit, max(f.Offset, 0))
	return queryRecords(q.DB.ReadAt(ctx), `WHERE `+strings.Join(where, " AND ")+` ORDER BY created_at, id LIMIT ? OFFSET ?`, args...)
}

// Count returns how many records match f (ignoring Limit and Offset) and
// their total amount.
func (q *Queue) Count(ctx context.Context, f Filter) (int, int64, error) {
	where := []string{"1=1"}
	var args []any
	if f.Status != "" {
		where = append(where, "status = ?")
		args = append(args, f.Status)
	}
	if f.Gateway != "" {
		where = append(where, "gateway = ?")
		args = append(args, f.Gateway)
	}
	var n int
	var amount int64
	err := q.DB.Read().QueryRowContext(ctx, `SELECT count(*), coalesce(sum(amount), 0) FROM saf_records WHERE `+strings.Join(where, " AND "), args...).Scan(&n, &amount)
	return n, amount, err
}

// Sum is the records of one currency and their total amount.
type Sum struct {
	Currency string `json:"currency"`
	Count    int    `json:"count"`
	Amount   int64  `json:"amount"`
}

// Sums totals the records f matches (ignoring Limit and Offset) per
// currency, as money is only ever added up within one. Without a status
// in f it counts what is still in the queue: forwarded and declined
// records are done and not part of its total.
func (q *Queue) Sums(ctx context.Context, f Filter) ([]Sum, error) {
	where := []string{"1=1"}
	var args []any
	if f.Status != "" {
		where = append(where, "status = ?")
		args = append(args, f.Status)
	} else {
		where = append(where, "status NOT IN ('forwarded', 'declined')")
	}
	if f.Gateway != "" {
		where = append(where, "gateway = ?")
		args = append(args, f.Gateway)
	}
	rows, err := q.DB.Read().QueryContext(ctx, `SELECT currency, count(*), sum(amount) FROM saf_records WHERE `+
		strings.Join(where, " AND ")+` GROUP BY currency ORDER BY currency`, args...)
	if err != nil {
		return nil, fmt.Errorf("sum the queue: %w", err)
	}
	defer rows.Close()
	var out []Sum
	for rows.Next() {
		var s Sum
		if err := rows.Scan(&s.Currency, &s.Count, &s.Amount); err != nil {
			return nil, fmt.Errorf("sum the queue: %w", err)
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// FormatSums writes sums as people read them: "31.50 USD, 2,700 JPY".
func FormatSums(sums []Sum) string {
	if len(sums) == 0 {
		return "nothing"
	}
	parts := make([]string, len(sums))
	for i, s := range sums {
		parts[i] = orders.FormatMoney(s.Amount, s.Currency)
	}
	return strings.Join(parts, ", ")
}

// Attempt is one forwarding attempt of a record.
type Attempt struct {
	At         time.Time `json:"at"`
	Gateway    string    `json:"gateway"`
	Outcome    string    `json:"outcome"`
	Detail     string    `json:"detail,omitempty"`
	DurationMS int64     `json:"duration_ms"`
}

// Get returns a record and its attempts, oldest first.
func (q *Queue) Get(ctx context.Context, id string) (Record, []Attempt, error) {
	r, err := getRecordBy(q.DB.ReadAt(ctx), "id", id)
	if err != nil {
		return Record{}, nil, err
	}
	rows, err := q.DB.Read().QueryContext(ctx, `SELECT at, gateway, outcome, detail, duration_ms FROM saf_attempts WHERE record_id = ? ORDER BY seq`, id)
	if err != nil {
		return Record{}, nil, err
	}
	defer rows.Close()
	var out []Attempt
	for rows.Next() {
		var a Attempt
		var at string
		if err := rows.Scan(&at, &a.Gateway, &a.Outcome, &a.Detail, &a.DurationMS); err != nil {
			return Record{}, nil, err
		}
		a.At, _ = migrations.ParseTime(at)
		out = append(out, a)
	}
	return r, out, rows.Err()
}

// RecordForPayment returns the record of a payment.
func (q *Queue) RecordForPayment(ctx context.Context, paymentID string) (Record, error) {
	return getRecordBy(q.DB.ReadAt(ctx), "payment_id", paymentID)
}

func conflict(code, format string, args ...any) error {
	return &orders.Error{Kind: orders.KindConflict, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Replay makes a queued, held or expired record due now; the forwarder
// sends it as soon as the emergency stop and its bank allow. A replayed
// expired record is no longer expired. Errors: saf_record_not_found,
// saf_not_replayable (forwarded, declined, or being forwarded).
func (q *Queue) Replay(ctx context.Context, id, actor, reason string) (Record, error) {
	return q.manage(ctx, id, actor, "saf.replay", reason, func(r *Record) error {
		if err := q.reachable(r); err != nil {
			return err
		}
		switch r.Status {
		case Queued, Held, Expired:
			r.Status, r.NextAttemptAt = Queued, q.now()
			r.Attempts, r.expireExempt = 0, true
			return nil
		}
		return conflict("saf_not_replayable", "record %s is %s", r.ID, r.Status)
	})
}

// Hold keeps a queued or expired record from being forwarded until it is
// released. A manager decided about it, so it no longer expires.
// Errors: saf_record_not_found, saf_not_holdable.
func (q *Queue) Hold(ctx context.Context, id, actor, reason string) (Record, error) {
	return q.manage(ctx, id, actor, "saf.hold", reason, func(r *Record) error {
		switch r.Status {
		case Queued, Expired, Held:
			r.Status, r.expireExempt = Held, true
			return nil
		}
		return conflict("saf_not_holdable", "record %s is %s", r.ID, r.Status)
	})
}

// Release returns a held record to the queue, due now. Errors:
// saf_record_not_found, saf_not_held.
func (q *Queue) Release(ctx context.Context, id, actor, reason string) (Record, error) {
	return q.manage(ctx, id, actor, "saf.release", reason, func(r *Record) error {
		if r.Status != Held {
			return conflict("saf_not_held", "record %s is %s, not held", r.ID, r.Status)
		}
		if err := q.reachable(r); err != nil {
			return err
		}
		r.Status, r.NextAttemptAt, r.Attempts = Queued, q.now(), 0
		r.expireExempt = true
		return nil
	})
}

// reachable refuses to queue a record pinned to a bank that is not
// configured: no lane would ever pick it up, and no other bank may take
// it (that bank may hold the payment).
func (q *Queue) reachable(r *Record) error {
	if r.Gateway == "" || slices.Contains(q.Bank.Banks(), r.Gateway) {
		return nil
	}
	return conflict("saf_bank_not_configured", "record %s is pinned to %s, which is not configured: configure that bank again, or settle the payment with it by hand", r.ID, r.Gateway)
}

func (q *Queue) manage(ctx context.Context, id, actor, action, reason string, change func(*Record) error) (Record, error) {
	now := q.now()
	var r Record
	err := q.DB.Update(ctx, func(tx *sql.Tx) error {
		var err error
		if r, err = getRecordBy(tx, "id", id); err != nil {
			return err
		}
		from := r.Status
		if err := change(&r); err != nil {
			return err
		}
		to := r.Status
		r.Status = from
		if err := setStatus(tx, &r, to, now); err != nil {
			return err
		}
		return devices.Audit(tx, devices.Entry{At: now, Actor: actor, Action: action, Target: id, Reason: reason,
			Detail: fmt.Sprintf("payment %s, %s, %s → %s", r.PaymentID, orders.FormatMoney(r.Amount, r.Currency), from, to)})
	})
	if err != nil {
		return Record{}, err
	}
	q.wake()
	return r, nil
}

// BulkResult says what a bulk action touched.
type BulkResult struct {
	Count  int   `json:"count"`
	Amount int64 `json:"amount"`
}

// replayAllWhich selects what ReplayAll touches: every queued and held
// record, except those pinned to a bank that is not configured (see
// reachable). Its one argument is the configured banks, as JSON.
const replayAllWhich = `status IN ('queued', 'held') AND (gateway = '' OR gateway IN (SELECT value FROM json_each(?)))`

// ReplayAllCount is what ReplayAll would touch now.
func (q *Queue) ReplayAllCount(ctx context.Context) (BulkResult, error) {
	banks, err := json.Marshal(q.Bank.Banks())
	if err != nil {
		return BulkResult{}, err
	}
	var res BulkResult
	err = q.DB.Read().QueryRowContext(ctx, `SELECT count(*), coalesce(sum(amount), 0) FROM saf_records WHERE `+replayAllWhich,
		string(banks)).Scan(&res.Count, &res.Amount)
	return res, err
}

// ReplayAllSums is what ReplayAll would touch now, per currency.
func (q *Queue) ReplayAllSums(ctx context.Context) ([]Sum, error) {
	banks, err := json.Marshal(q.Bank.Banks())
	if err != nil {
		return nil, err
	}
	return sumsIn(q.DB.ReadAt(ctx), replayAllWhich, string(banks))
}

// ReplayAll makes every queued and held record due now, in one audited
// action.
func (q *Queue) ReplayAll(ctx context.Context, actor, reason string) (BulkResult, error) {
	now := q.now()
	banks, err := json.Marshal(q.Bank.Banks())
	if err != nil {
		return BulkResult{}, err
	}
	var res BulkResult
	err = q.DB.Update(ctx, func(tx *sql.Tx) error {
		res = BulkResult{}
		sums, err := sumsIn(tx, replayAllWhich, string(banks))
		if err != nil {
			return err
		}
		if err := tx.QueryRow(`SELECT count(*), coalesce(sum(amount), 0) FROM saf_records WHERE `+replayAllWhich, string(banks)).
			Scan(&res.Count, &res.Amount); err != nil {
			return err
		}
		if _, err := tx.Exec(`UPDATE saf_records SET status = 'queued', attempts = 0, next_attempt_at = ?, updated_at = ?
			WHERE `+replayAllWhich, migrations.FormatTime(now), migrations.FormatTime(now), string(banks)); err != nil {
			return err
		}
		return devices.Audit(tx, devices.Entry{At: now, Actor: actor, Action: "saf.replay_all", Target: "saf", Reason: reason,
			Detail: fmt.Sprintf("%d records, %s", res.Count, FormatSums(sums))})
	})
	if err != nil {
		return BulkResult{}, err
	}
	q.wake()
	return res, nil
}

// Stats is the queue at a glance, for the dashboard. Outstanding is the
// figure the total limit is held against: minor units added up across
// currencies, as the offline rules do. People read OutstandingSums, the
// same records per currency; the limits are in LimitCurrency (Rules.Currency).
type Stats struct {
	ByStatus             map[Status]int `json:"by_status"`
	Outstanding          int64          `json:"outstanding_amount"`
	OutstandingCount     int64          `json:"outstanding_count"`
	OutstandingSums      []Sum          `json:"outstanding_by_currency"`
	TotalLimit           int64          `json:"total_limit"`
	FloorLimit           int64          `json:"floor_limit"`
	LimitCurrency        string         `json:"limit_currency,omitempty"`
	OldestCreatedAt      time.Time      `json:"oldest_created_at,omitzero"`
	OldestAgeSeconds     float64        `json:"oldest_age_seconds"`
	MaxAgeSeconds        float64        `json:"max_age_seconds"`
	DeclinedAfterForward int            `json:"declined_after_forward"`
}

// Stats reads the queue's figures.
func (q *Queue) Stats(ctx context.Context) (Stats, error) {
	rules := q.Rules.withDefaults()
	st := Stats{ByStatus: map[Status]int{}, TotalLimit: rules.TotalLimit, FloorLimit: rules.FloorLimit, MaxAgeSeconds: rules.MaxAge.Seconds(),
		LimitCurrency: rules.Currency}
	db := q.DB.Read()
	rows, err := db.QueryContext(ctx, `SELECT status, count(*) FROM saf_records GROUP BY status`)
	if err != nil {
		return st, err
	}
	for rows.Next() {
		var s Status
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			rows.Close()
			return st, err
		}
		st.ByStatus[s] = n
	}
	rows.Close()
	if err := db.QueryRowContext(ctx, `SELECT count, amount FROM saf_outstanding WHERE id = 1`).Scan(&st.OutstandingCount, &st.Outstanding); err != nil {
		return st, err
	}
	sums, err := sumsIn(q.DB.ReadAt(ctx), `status IN ('queued', 'forwarding', 'held', 'expired')`)
	if err != nil {
		return st, err
	}
	st.OutstandingSums = append([]Sum{}, sums...) // [] rather than null in JSON
	var oldest sql.NullString
	if err := db.QueryRowContext(ctx, `SELECT min(created_at) FROM saf_records WHERE status IN ('queued', 'forwarding', 'held', 'expired')`).Scan(&oldest); err != nil {
		return st, err
	}
	if oldest.Valid && oldest.String != "" {
		st.OldestCreatedAt, _ = migrations.ParseTime(oldest.String)
		st.OldestAgeSeconds = q.now().Sub(st.OldestCreatedAt).Seconds()
	}
	st.DeclinedAfterForward = st.ByStatus[Declined]
	return st, nil
}

// sumsIn totals, per currency, the records matching where.
func sumsIn(q queryer, where string, args ...any) ([]Sum, error) {
	rows, err := q.Query(`SELECT currency, count(*), sum(amount) FROM saf_records WHERE `+where+` GROUP BY currency ORDER BY currency`, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Sum
	for rows.Next() {
		var s Sum
		if err := rows.Scan(&s.Currency, &s.Count, &s.Amount); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
