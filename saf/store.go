package saf

import (
	"database/sql"
	"errors"
	"time"

	"storepay/migrations"
	"storepay/orders"
)

type queryer = migrations.Queryer

const recordCols = `id, payment_id, idem_key, gateway, terminal_id, amount, currency, capture, advice, fingerprint, card_last4,
	card_sealed, status, attempts, last_error, last_error_code, last_unavailable, bank_auth_id, decline_code, expire_exempt, created_at,
	next_attempt_at, updated_at, forwarded_at`

func scanRecord(row interface{ Scan(...any) error }) (Record, error) {
	var r Record
	var created, next, updated, forwarded string
	err := row.Scan(&r.ID, &r.PaymentID, &r.idemKey, &r.Gateway, &r.TerminalID, &r.Amount, &r.Currency, &r.capture, &r.advice,
		&r.fingerprint, &r.CardLast4, &r.sealed, &r.Status, &r.Attempts, &r.LastError, &r.LastErrorCode, &r.lastUnavailable, &r.BankAuthID,
		&r.DeclineCode, &r.expireExempt, &created, &next, &updated, &forwarded)
	if err != nil {
		return Record{}, err
	}
	r.CreatedAt, _ = migrations.ParseTime(created)
	r.NextAttemptAt, _ = migrations.ParseTime(next)
	r.UpdatedAt, _ = migrations.ParseTime(updated)
	r.ForwardedAt, _ = migrations.ParseTime(forwarded)
	return r, nil
}

func getRecordBy(q queryer, col, val string) (Record, error) {
	r, err := scanRecord(q.QueryRow(`SELECT `+recordCols+` FROM saf_records WHERE `+col+` = ?`, val))
	if errors.Is(err, sql.ErrNoRows) {
		return Record{}, errNotFound(val)
	}
	return r, err
}

func queryRecords(q queryer, where string, args ...any) ([]Record, error) {
	rows, err := q.Query(`SELECT `+recordCols+` FROM saf_records `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Record{}
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// setStatus moves a record to status, keeping saf_outstanding in step.
func setStatus(tx *sql.Tx, r *Record, to Status, now time.Time) error {
	if r.Status.outstanding() && !to.outstanding() {
		if err := addOutstanding(tx, -1, -r.Amount); err != nil {
			return err
		}
	} else if !r.Status.outstanding() && to.outstanding() {
		if err := addOutstanding(tx, 1, r.Amount); err != nil {
			return err
		}
	}
	r.Status, r.UpdatedAt = to, now
	return saveRecord(tx, r)
}

func saveRecord(tx *sql.Tx, r *Record) error {
	_, err := tx.Exec(`UPDATE saf_records SET gateway=?, card_sealed=?, status=?, attempts=?, last_error=?, last_error_code=?,
		last_unavailable=?, bank_auth_id=?, decline_code=?, expire_exempt=?, next_attempt_at=?, updated_at=?, forwarded_at=? WHERE id=?`,
		r.Gateway, r.sealed, r.Status, r.Attempts, r.LastError, r.LastErrorCode, r.lastUnavailable, r.BankAuthID, r.DeclineCode, r.expireExempt,
		migrations.FormatTime(r.NextAttemptAt), migrations.FormatTime(r.UpdatedAt), tsOrEmpty(r.ForwardedAt), r.ID)
	return err
}

func tsOrEmpty(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return migrations.FormatTime(t)
}

func errNotFound(id string) error {
	return &orders.Error{Kind: orders.KindNotFound, Code: "saf_record_not_found", Message: "no store-and-forward record " + id}
}
