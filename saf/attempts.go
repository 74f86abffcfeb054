package saf

import (
	"context"

	"storepay/migrations"
)

// BankAttempt is one forwarding attempt at a bank, with the record it was
// for.
type BankAttempt struct {
	Attempt
	RecordID  string `json:"record_id"`
	PaymentID string `json:"payment_id"`
}

// RecentAttempts returns the latest forwarding attempts at bank, newest
// first (at most limit, default 10, at most 100): what the manager
// console shows of a bank next to its breaker.
func (q *Queue) RecentAttempts(ctx context.Context, bank string, limit int) ([]BankAttempt, error) {
	if limit <= 0 {
		limit = 10
	}
	limit = min(limit, 100)
	rows, err := q.DB.Read().QueryContext(ctx, `SELECT a.at, a.gateway, a.outcome, a.detail, a.duration_ms, a.record_id, r.payment_id
		FROM saf_attempts a JOIN saf_records r ON r.id = a.record_id
		WHERE a.gateway = ? ORDER BY a.seq DESC LIMIT ?`, bank, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []BankAttempt{}
	for rows.Next() {
		var a BankAttempt
		var at string
		if err := rows.Scan(&at, &a.Gateway, &a.Outcome, &a.Detail, &a.DurationMS, &a.RecordID, &a.PaymentID); err != nil {
			return nil, err
		}
		a.At, _ = migrations.ParseTime(at)
		out = append(out, a)
	}
	return out, rows.Err()
}
