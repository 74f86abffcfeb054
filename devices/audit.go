package devices

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"storepay/migrations"
)

// Entry is one line of the audit log: who did what to what, when and why.
// Manager actions (from the JSON API and the console alike) and automatic
// ones (the runaway guard) are recorded the same way.
type Entry struct {
	Seq    int64     `json:"seq"`
	At     time.Time `json:"at"`
	Actor  string    `json:"actor"`
	Action string    `json:"action"`
	Target string    `json:"target,omitempty"`
	Reason string    `json:"reason,omitempty"`
	Detail string    `json:"detail,omitempty"`
}

// Audit appends e to the audit log inside tx, so that an action and its
// record commit together or not at all.
func Audit(tx *sql.Tx, e Entry) error {
	if e.At.IsZero() {
		e.At = time.Now()
	}
	_, err := tx.Exec(`INSERT INTO audit_log (at, actor, action, target, reason, detail) VALUES (?,?,?,?,?,?)`,
		migrations.FormatTime(e.At), e.Actor, e.Action, e.Target, e.Reason, e.Detail)
	if err != nil {
		return fmt.Errorf("audit %s: %w", e.Action, err)
	}
	return nil
}

// AuditFilter selects audit entries; empty fields match everything.
type AuditFilter struct {
	Action string
	Target string
	Before int64 // entries with a smaller seq (paging backwards)
	Limit  int
}

// AuditLog returns audit entries, newest first.
func AuditLog(ctx context.Context, db *migrations.DB, f AuditFilter) ([]Entry, error) {
	q := `SELECT seq, at, actor, action, target, reason, detail FROM audit_log WHERE 1=1`
	var args []any
	if f.Action != "" {
		q += ` AND action = ?`
		args = append(args, f.Action)
	}
	if f.Target != "" {
		q += ` AND target = ?`
		args = append(args, f.Target)
	}
	if f.Before > 0 {
		q += ` AND seq < ?`
		args = append(args, f.Before)
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	q += ` ORDER BY seq DESC LIMIT ?`
	args = append(args, f.Limit)
	rows, err := db.Read().QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	defer rows.Close()
	out := []Entry{}
	for rows.Next() {
		var e Entry
		var at string
		if err := rows.Scan(&e.Seq, &at, &e.Actor, &e.Action, &e.Target, &e.Reason, &e.Detail); err != nil {
			return nil, fmt.Errorf("audit log: %w", err)
		}
		e.At, _ = migrations.ParseTime(at)
		out = append(out, e)
	}
	return out, rows.Err()
}
