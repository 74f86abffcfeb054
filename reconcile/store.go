package reconcile

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"storepay/devices"
	"storepay/migrations"
)

// ErrNotFound is returned by [Last] for a date never reconciled, and by
// [Decide] for an unknown proposal.
var ErrNotFound = errors.New("reconcile: not found")

// ErrDecided is returned by [Decide] for a proposal that is no longer
// open: accepted, rejected, or withdrawn by a later run.
var ErrDecided = errors.New("reconcile: proposal already decided")

// writeChunk bounds the rows one write transaction carries. The database
// has a single writer that the tills share: a night's million items go in
// small commits so that a payment never waits behind the batch for long.
const writeChunk = 2000

// Save records res as the reconciliation of its date, replacing the
// date's previous run, and records (or refreshes) a proposal per
// discrepancy. A manager's decision on a proposal survives a re-run.
//
// The items are written in small transactions under a new run id that
// nothing points at yet; one short transaction then makes that run the
// date's current one. A reader (GET /v1/reconciliations/{date}) sees the
// previous run or this one, never a mix; a crash half way leaves the
// previous run current and a dead run that the next Save clears. Running
// the same date twice leaves exactly one run's rows.
//
// On success res.RunID and the proposals' ids and statuses are set.
func Save(ctx context.Context, db *migrations.DB, res *Result) error {
	if err := save(ctx, db, res); err != nil {
		return fmt.Errorf("save reconciliation of %s: %w", res.Date, err)
	}
	return nil
}

func save(ctx context.Context, db *migrations.DB, res *Result) error {
	summary, err := json.Marshal(res.Summary)
	if err != nil {
		return err
	}
	problems := res.Problems
	if problems == nil {
		problems = []Problem{}
	}
	probs, err := json.Marshal(problems)
	if err != nil {
		return err
	}
	var runID int64
	err = db.Update(ctx, func(tx *sql.Tx) error {
		r, err := tx.Exec(`INSERT INTO reconciliation_runs (date, status, summary, problems, items, started_at, finished_at)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, res.Date, res.Status, summary, probs, res.Summary.Items,
			migrations.FormatTime(res.StartedAt), migrations.FormatTime(res.FinishedAt))
		if err != nil {
			return err
		}
		runID, err = r.LastInsertId()
		return err
	})
	if err != nil {
		return fmt.Errorf("record run: %w", err)
	}

	// The items, in chunks.
	batch := make([]Item, 0, writeChunk)
	seq := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := db.Update(ctx, func(tx *sql.Tx) error { return insertItems(tx, runID, seq, batch) })
		if err != nil {
			return fmt.Errorf("record items: %w", err)
		}
		seq += len(batch)
		batch = batch[:0]
		return nil
	}
	for it := range res.Items() {
		batch = append(batch, it)
		if len(batch) == writeChunk {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}

	// The proposals, in chunks too: keyed by date and item, so that they
	// attach to the same item of whichever run is current.
	now := migrations.FormatTime(res.FinishedAt)
	keep := map[string]bool{}
	for start := 0; start < len(res.discrepancies); start += writeChunk {
		part := res.discrepancies[start:min(start+writeChunk, len(res.discrepancies))]
		err := db.Update(ctx, func(tx *sql.Tx) error {
			for i := range part {
				if err := upsertProposal(tx, res.Date, &part[i], now); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("record proposals: %w", err)
		}
		for i := range part {
			keep[part[i].key()] = true
		}
	}

	// The switch: this run becomes the date's result.
	var previous []int64
	err = db.Update(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`INSERT INTO reconciliations (date, run_id) VALUES (?, ?)
			ON CONFLICT (date) DO UPDATE SET run_id = excluded.run_id`, res.Date, runID); err != nil {
			return err
		}
		for _, ref := range res.withdraw {
			if _, err := tx.Exec(`UPDATE reconciliation_proposals SET status = ?, note = ?, updated_at = ?
				WHERE store_ref = ? AND date <> ? AND category = ? AND status = ?`,
				Withdrawn, "settled in the report of "+res.Date, now, ref, res.Date, MissingAtBank, Proposed); err != nil {
				return err
			}
		}
		rows, err := tx.Query(`SELECT id FROM reconciliation_runs WHERE date = ? AND id <> ?`, res.Date, runID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				return err
			}
			previous = append(previous, id)
		}
		return rows.Err()
	})
	if err != nil {
		return fmt.Errorf("make the run current: %w", err)
	}
	res.RunID = runID

	// Clear what the new run replaced: earlier runs' items and the open
	// proposals of items that are gone.
	if err := dropRuns(ctx, db, previous); err != nil {
		return err
	}
	return dropStaleProposals(ctx, db, res.Date, keep)
}

// itemColumns are the columns of reconciliation_items a run writes.
const itemColumns = `id, category, gateway, kind, payment_id, refund_id, psp_reference,
	merchant_reference, currency, bank_currency, store_amount, bank_amount, store_date, line, detail, row_hash`

// itemID is the rowid of a run's seq-th item: a run's items are one range.
func itemID(runID int64, seq int) int64 { return runID<<32 | int64(seq) }

// rowsPerInsert is how many items one INSERT statement carries: a
// statement per row costs more in the driver than SQLite's work.
const rowsPerInsert = 64

// Row shapes of an INSERT: any item, or a matched one, whose constant
// columns are written as literals (binding a value costs more than SQLite
// storing it, and a night is mostly matched items).
const (
	anyItem     = "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?),"
	matchedItem = "(?,'matched',?,?,?,?,?,'',?,'',?,?,?,?,'',?),"
)

// insertItems writes items numbered from seq, many rows per statement.
func insertItems(tx *sql.Tx, runID int64, seq int, items []Item) error {
	stmts := map[string]*sql.Stmt{}
	defer func() {
		for _, st := range stmts {
			st.Close()
		}
	}()
	args := make([]any, 0, rowsPerInsert*16)
	for start := 0; start < len(items); start += rowsPerInsert {
		part := items[start:min(start+rowsPerInsert, len(items))]
		shape := matchedItem
		for i := range part {
			if part[i].Category != Matched {
				shape = anyItem
				break
			}
		}
		args = args[:0]
		for i := range part {
			it := &part[i]
			id := itemID(runID, seq+start+i)
			if shape == matchedItem {
				args = append(args, id, it.Gateway, it.Kind, it.PaymentID, it.RefundID, it.PSPReference, it.Currency,
					it.StoreAmount, it.BankAmount, it.StoreDate, it.Line, int64(it.rowHash))
				continue
			}
			detail := it.Detail
			if it.Category == Matched {
				detail = "" // Last writes the sentence again
			}
			args = append(args, id, it.Category, it.Gateway, it.Kind, it.PaymentID, it.RefundID, it.PSPReference,
				it.MerchantReference, it.Currency, it.BankCurrency, it.StoreAmount, it.BankAmount, it.StoreDate, it.Line, detail, int64(it.rowHash))
		}
		query := `INSERT INTO reconciliation_items (` + itemColumns + `) VALUES ` +
			strings.TrimSuffix(strings.Repeat(shape, len(part)), ",")
		st := stmts[query]
		if st == nil {
			var err error
			if st, err = tx.Prepare(query); err != nil {
				return err
			}
			stmts[query] = st
		}
		if _, err := st.Exec(args...); err != nil {
			return err
		}
	}
	return nil
}

func upsertProposal(tx *sql.Tx, date string, it *Item, now string) error {
	r := it.Resolution
	if r == nil {
		return nil
	}
	key := it.key()
	// The store record the item is about, for a later night's run to
	// withdraw a missing_at_bank proposal when it finds the row.
	storeRef := it.RefundID
	if storeRef == "" && it.Kind == kindCapture.String() {
		storeRef = it.PaymentID
	}
	_, err := tx.Exec(`INSERT INTO reconciliation_proposals (date, item_key, store_ref, category, gateway, payment_id,
			psp_reference, action, description, amount, currency, status, created_at, updated_at)
		VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)
		ON CONFLICT (date, item_key) DO UPDATE SET action = excluded.action, description = excluded.description,
			amount = excluded.amount, currency = excluded.currency, updated_at = excluded.updated_at
			WHERE reconciliation_proposals.status = 'proposed'`,
		date, key, storeRef, it.Category, it.Gateway, it.PaymentID, it.PSPReference, r.Action, r.Description,
		r.Amount, it.Currency, Proposed, now, now)
	if err != nil {
		return err
	}
	return tx.QueryRow(`SELECT id, status, note, decided_by FROM reconciliation_proposals WHERE date = ? AND item_key = ?`,
		date, key).Scan(&r.ID, &r.Status, &r.Note, &r.DecidedBy)
}

// dropRuns deletes runs and their items, a chunk at a time.
func dropRuns(ctx context.Context, db *migrations.DB, runs []int64) error {
	for _, id := range runs {
		for lo := itemID(id, 0); ; lo += writeChunk {
			var n int64
			err := db.Update(ctx, func(tx *sql.Tx) error {
				r, err := tx.Exec(`DELETE FROM reconciliation_items WHERE id >= ? AND id < ?`, lo, min(lo+writeChunk, itemID(id+1, 0)))
				if err != nil {
					return err
				}
				n, err = r.RowsAffected()
				return err
			})
			if err != nil {
				return fmt.Errorf("clear run %d: %w", id, err)
			}
			if n == 0 {
				break
			}
		}
		err := db.Update(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec(`DELETE FROM reconciliation_runs WHERE id = ? AND id NOT IN (SELECT run_id FROM reconciliations)`, id)
			return err
		})
		if err != nil {
			return fmt.Errorf("clear run %d: %w", id, err)
		}
	}
	return nil
}

func dropStaleProposals(ctx context.Context, db *migrations.DB, date string, keep map[string]bool) error {
	var stale []int64
	err := db.View(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT id, item_key FROM reconciliation_proposals WHERE date = ? AND status = ?`, date, Proposed)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id int64
			var key string
			if err := rows.Scan(&id, &key); err != nil {
				return err
			}
			if !keep[key] {
				stale = append(stale, id)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return fmt.Errorf("clear stale proposals: %w", err)
	}
	for start := 0; start < len(stale); start += writeChunk {
		part := stale[start:min(start+writeChunk, len(stale))]
		err := db.Update(ctx, func(tx *sql.Tx) error {
			for _, id := range part {
				if _, err := tx.Exec(`DELETE FROM reconciliation_proposals WHERE id = ? AND status = ?`, id, Proposed); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("clear stale proposals: %w", err)
		}
	}
	return nil
}

// Last returns the current (last completed) run of business date date,
// as GET /v1/reconciliations/{date} serves it. Errors: ErrNotFound when
// the date was never reconciled; database errors.
func Last(ctx context.Context, db *migrations.DB, date string) (Report, error) {
	var rep Report
	err := db.View(ctx, func(tx *sql.Tx) error {
		var summary, problems, started, finished string
		err := tx.QueryRowContext(ctx, `SELECT r.id, r.status, r.summary, r.problems, r.started_at, r.finished_at
			FROM reconciliations c JOIN reconciliation_runs r ON r.id = c.run_id WHERE c.date = ?`, date).
			Scan(&rep.RunID, &rep.Status, &summary, &problems, &started, &finished)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		rep.Date = date
		if err := json.Unmarshal([]byte(summary), &rep.Summary); err != nil {
			return fmt.Errorf("summary: %w", err)
		}
		if err := json.Unmarshal([]byte(problems), &rep.Problems); err != nil {
			return fmt.Errorf("problems: %w", err)
		}
		rep.StartedAt, _ = migrations.ParseTime(started)
		rep.FinishedAt, _ = migrations.ParseTime(finished)

		proposals := map[string]*Resolution{}
		rows, err := tx.QueryContext(ctx, `SELECT item_key, id, action, description, amount, status, note, decided_by
			FROM reconciliation_proposals WHERE date = ?`, date)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var key string
			r := &Resolution{}
			if err := rows.Scan(&key, &r.ID, &r.Action, &r.Description, &r.Amount, &r.Status, &r.Note, &r.DecidedBy); err != nil {
				return err
			}
			proposals[key] = r
		}
		if err := rows.Err(); err != nil {
			return err
		}

		rows, err = tx.QueryContext(ctx, `SELECT category, gateway, kind, payment_id, refund_id, psp_reference,
			merchant_reference, currency, bank_currency, store_amount, bank_amount, store_date, line, detail
			FROM reconciliation_items WHERE id >= ? AND id < ? ORDER BY id`, itemID(rep.RunID, 0), itemID(rep.RunID+1, 0))
		if err != nil {
			return err
		}
		defer rows.Close()
		rep.Items = []Item{}
		for rows.Next() {
			var it Item
			if err := rows.Scan(&it.Category, &it.Gateway, &it.Kind, &it.PaymentID, &it.RefundID, &it.PSPReference, &it.MerchantReference, &it.Currency, &it.BankCurrency, &it.StoreAmount,
				&it.BankAmount, &it.StoreDate, &it.Line, &it.Detail); err != nil {
				return err
			}
			if it.Category == Matched {
				it.Detail = matchedDetail(date, it.StoreDate)
			} else {
				it.Resolution = proposals[it.key()]
			}
			rep.Items = append(rep.Items, it)
		}
		return rows.Err()
	})
	if errors.Is(err, ErrNotFound) {
		return Report{}, ErrNotFound
	}
	if err != nil {
		return Report{}, fmt.Errorf("read reconciliation of %s: %w", date, err)
	}
	if rep.Problems == nil {
		rep.Problems = []Problem{}
	}
	return rep, nil
}

// Night is one business date's result in a list of nights.
type Night struct {
	Date       string    `json:"date"`
	Status     Status    `json:"status"`
	RunID      int64     `json:"run_id"`
	FinishedAt time.Time `json:"finished_at"`
	Summary    Summary   `json:"summary"`
}

// Nights lists the current run of the last n business dates reconciled,
// newest first: what the console shows of each night.
func Nights(ctx context.Context, db *migrations.DB, n int) ([]Night, error) {
	var out []Night
	err := db.View(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT c.date, r.status, r.id, r.finished_at, r.summary
			FROM reconciliations c JOIN reconciliation_runs r ON r.id = c.run_id ORDER BY c.date DESC LIMIT ?`, n)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var nt Night
			var finished, summary string
			if err := rows.Scan(&nt.Date, &nt.Status, &nt.RunID, &finished, &summary); err != nil {
				return err
			}
			nt.FinishedAt, _ = migrations.ParseTime(finished)
			if err := json.Unmarshal([]byte(summary), &nt.Summary); err != nil {
				return fmt.Errorf("summary of %s: %w", nt.Date, err)
			}
			out = append(out, nt)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("list reconciliations: %w", err)
	}
	return out, nil
}

// Decide records a manager's decision on proposal id: accepted or
// rejected, by whom and why, in the audit log in the same transaction. It
// performs nothing: whoever acts on an accepted proposal does so through
// the payments API. Errors: ErrNotFound, ErrDecided (already decided, or
// withdrawn by a later run).
func Decide(ctx context.Context, db *migrations.DB, id int64, accept bool, by, note string, now time.Time) error {
	status := Rejected
	if accept {
		status = Accepted
	}
	err := db.Update(ctx, func(tx *sql.Tx) error {
		var current string
		err := tx.QueryRow(`SELECT status FROM reconciliation_proposals WHERE id = ?`, id).Scan(&current)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if current != Proposed {
			return ErrDecided
		}
		_, err = tx.Exec(`UPDATE reconciliation_proposals SET status = ?, decided_by = ?, decided_at = ?, note = ?, updated_at = ?
			WHERE id = ?`, status, by, migrations.FormatTime(now), note, migrations.FormatTime(now), id)
		if err != nil {
			return err
		}
		return devices.Audit(tx, devices.Entry{At: now, Actor: by, Action: "reconciliation." + strings.TrimSuffix(status, "ed"),
			Target: fmt.Sprintf("proposal %d", id), Reason: note})
	})
	if errors.Is(err, ErrNotFound) || errors.Is(err, ErrDecided) {
		return err
	}
	if err != nil {
		return fmt.Errorf("decide proposal %d: %w", id, err)
	}
	return nil
}
