package iso8583

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"storepay/gateway"
	"storepay/migrations"
)

// RecordTTL is how long a record (and the card sealed in it) is kept
// after its last change: a refund may follow a sale for months, and every
// message of the profile carries the card. Records older than this are
// purged ([Durable.Purge]); a later refund of such a payment is refused
// without sending anything (unknown_authorization) and is made by hand.
const RecordTTL = 120 * 24 * time.Hour

// Durable is storepay's durable side of one ISO 8583 gateway, in its
// SQLite database (migration 0011): the terminal's STAN counter, each
// operation's trace written ahead, and the records later messages need.
// It implements [STANAllocator], [Traces] and [RecordStore].
type Durable struct {
	DB       *migrations.DB
	Gateway  string
	Terminal string // terminal_id: the STAN counter's scope
	// Now is the clock of the traces' field 7. Nil means time.Now.
	Now func() time.Time
}

var (
	_ STANAllocator = (*Durable)(nil)
	_ Traces        = (*Durable)(nil)
	_ RecordStore   = (*Durable)(nil)
)

func (d *Durable) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

// NextSTAN advances the terminal's counter and commits it before the STAN
// is used: a restart never hands out a STAN whose message may still be
// unanswered.
func (d *Durable) NextSTAN(ctx context.Context) (STAN, error) {
	var stan STAN
	err := d.DB.Update(ctx, func(tx *sql.Tx) error {
		var err error
		stan, err = nextSTAN(tx, d.Terminal)
		return err
	})
	return stan, err
}

func nextSTAN(tx *sql.Tx, terminal string) (STAN, error) {
	var last int64
	err := tx.QueryRow(`SELECT last FROM iso_stan WHERE terminal_id = ?`, terminal).Scan(&last)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return 0, err
	}
	next := STAN(last%int64(MaxSTAN) + 1)
	_, err = tx.Exec(`INSERT INTO iso_stan (terminal_id, last) VALUES (?, ?)
		ON CONFLICT (terminal_id) DO UPDATE SET last = excluded.last`, terminal, int64(next))
	return next, err
}

// Trace returns key's trace, allocating and committing it (with its STAN)
// on first use, in one transaction, before anything is sent.
func (d *Durable) Trace(ctx context.Context, key string) (Trace, bool, error) {
	var tr Trace
	repeat := false
	err := d.DB.Update(ctx, func(tx *sql.Tx) error {
		var stan int64
		var sent string
		err := tx.QueryRow(`SELECT stan, rrn, sent_at FROM iso_traces WHERE gateway = ? AND key = ?`, d.Gateway, key).
			Scan(&stan, &tr.RRN, &sent)
		if err == nil {
			repeat, tr.STAN = true, STAN(stan)
			tr.Time, err = migrations.ParseTime(sent)
			return err
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		s, err := nextSTAN(tx, d.Terminal)
		if err != nil {
			return err
		}
		t := d.now().UTC().Truncate(time.Second)
		tr = Trace{STAN: s, RRN: MakeRRN(t, s), Time: t}
		_, err = tx.Exec(`INSERT INTO iso_traces (gateway, key, stan, rrn, sent_at, created_at) VALUES (?,?,?,?,?,?)`,
			d.Gateway, key, int64(s), tr.RRN, migrations.FormatTime(t), migrations.FormatTime(d.now()))
		return err
	})
	if err != nil {
		return Trace{}, false, fmt.Errorf("iso8583 trace of %s: %w", key, err)
	}
	return tr, repeat, nil
}

// Peek returns key's trace if it was allocated.
func (d *Durable) Peek(ctx context.Context, key string) (Trace, bool, error) {
	var tr Trace
	var stan int64
	var sent string
	err := d.DB.Read().QueryRowContext(ctx, `SELECT stan, rrn, sent_at FROM iso_traces WHERE gateway = ? AND key = ?`, d.Gateway, key).
		Scan(&stan, &tr.RRN, &sent)
	if errors.Is(err, sql.ErrNoRows) {
		return Trace{}, false, nil
	}
	if err != nil {
		return Trace{}, false, err
	}
	tr.STAN = STAN(stan)
	tr.Time, err = migrations.ParseTime(sent)
	return tr, err == nil, err
}

// SaveRecord writes r, except over the bank's answer: a record whose
// stored status is definite (approved, declined, reversed, refunded) is
// not overwritten by one that is not. Two endpoints of one gateway (its
// failover URLs) keep their own copies in memory and share this store;
// the one that saw the approval must not be overwritten by the other's
// stale "unknown" or "not sent" (found by the simulator, seed 363416).
func (d *Durable) SaveRecord(ctx context.Context, r Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return d.DB.Update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO iso_records (gateway, id, reference, record, updated_at) VALUES (?,?,?,?,?)
			ON CONFLICT (gateway, id) DO UPDATE SET reference = excluded.reference, record = excluded.record,
			updated_at = excluded.updated_at
			WHERE ? OR json_extract(iso_records.record, '$.status') NOT IN (?, ?, ?, ?)`,
			d.Gateway, r.ID, r.Reference, b, migrations.FormatTime(d.now()),
			definite(r.Status), gateway.StatusApproved, gateway.StatusDeclined, gateway.StatusReversed, RecordRefunded)
		return err
	})
}

// LoadRecord reads the record of an RRN.
func (d *Durable) LoadRecord(ctx context.Context, id string) (Record, bool, error) {
	var b []byte
	err := d.DB.Read().QueryRowContext(ctx, `SELECT record FROM iso_records WHERE gateway = ? AND id = ?`, d.Gateway, id).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, err
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return Record{}, false, fmt.Errorf("iso8583 record %s: %w", id, err)
	}
	return r, true, nil
}

// LoadRecords reads a payment's records, oldest first.
func (d *Durable) LoadRecords(ctx context.Context, reference string) ([]Record, error) {
	rows, err := d.DB.Read().QueryContext(ctx, `SELECT record FROM iso_records WHERE gateway = ? AND reference = ?
		ORDER BY rowid`, d.Gateway, reference)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Record
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		var r Record
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Purge deletes the records (and their sealed cards) not changed for
// RecordTTL, and the traces as old: nothing will name them again.
func (d *Durable) Purge(ctx context.Context) (int64, error) {
	cut := migrations.FormatTime(d.now().Add(-RecordTTL))
	var n int64
	err := d.DB.Update(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`DELETE FROM iso_records WHERE gateway = ? AND updated_at < ?`, d.Gateway, cut)
		if err != nil {
			return err
		}
		n, _ = res.RowsAffected()
		_, err = tx.Exec(`DELETE FROM iso_traces WHERE gateway = ? AND created_at < ?`, d.Gateway, cut)
		return err
	})
	return n, err
}
