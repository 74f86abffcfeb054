package reconcile

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"storepay/migrations"
)

// Ledger is the store's side of a reconciliation: every card capture and
// refund whose business date lies within one day of the date reconciled,
// indexed by the reference the bank echoes, plus the sales no bank has
// settled (still in store-and-forward, or declined after forward).
//
// It is built to hold a million records in little memory and without work
// for the garbage collector: every string lives in one arena (a single
// string) and the records are pointer-free structs that point into it.
type Ledger struct {
	// Date is the business date reconciled (YYYY-MM-DD, UTC).
	Date string

	days     [3]string // D-1, D, D+1
	text     string    // the arena
	entries  []entry
	byRef    map[string]int32 // payment id (captures) or refund id (refunds)
	byBankID map[string]int32 // built on first use: rows without a usable merchant_reference
	gateways []string
	gwIndex  map[string]uint16
	sales    []sale

	currencies []string
}

// span is a string in the ledger's arena.
type span struct{ off, n uint32 }

type entryKind uint8

const (
	kindCapture entryKind = iota + 1
	kindRefund
)

func (k entryKind) String() string {
	if k == kindRefund {
		return "refund"
	}
	return "capture"
}

// entry is one store record that a bank should settle, and what the run
// found for it.
type entry struct {
	ref, payment, bankID span
	amount               int64 // signed, the bank's convention: refunds negative
	currency             [3]byte
	kind                 entryKind
	day                  int8 // business date relative to the run's: -1, 0, +1
	gw                   uint16

	// Filled by the match.
	state   entryState
	src     uint16 // source whose row settled it
	bankCur [3]byte
	line    int32
	gross   int64
	psp     int32 // -1: the row's psp_reference is bankID; else an index into Result.psps
}

type entryState uint8

const (
	unmatched        entryState = iota
	settled                     // settled by a row of this run
	settledElsewhere            // settled in another date's file: reported there
)

// sale is a card sale that no bank has settled: still stored for
// forwarding (or expired), or declined by the bank after forward.
type sale struct {
	paymentID, gateway, currency string
	amount                       int64
	at                           string // sold (stored) or declined (declined_after_forward)
	declined                     bool
	safStatus                    string
}

func (l *Ledger) str(s span) string { return l.text[s.off : s.off+s.n] }

// Len is the number of store records in the window.
func (l *Ledger) Len() int { return len(l.entries) }

// captureStatuses are the payment statuses whose capture a bank settles.
const captureStatuses = `'captured','partially_refunded','refunded'`

// LoadLedger reads the store's side of date (YYYY-MM-DD) from db: card
// captures (business date: the UTC date of captured_at) and refunds the
// bank confirmed (the UTC date of their updated_at) from the day before to
// the day after, card payments still stored for forwarding that were sold
// by the end of date, and payments declined after forward on date. Cash
// never reaches a bank and is left out.
//
// It reads one consistent snapshot of the read pool and never writes.
func LoadLedger(ctx context.Context, db *migrations.DB, date string) (*Ledger, error) {
	d, err := time.Parse(time.DateOnly, date)
	if err != nil {
		return nil, fmt.Errorf("load ledger: date %q is not YYYY-MM-DD", date)
	}
	l := &Ledger{Date: date, gwIndex: map[string]uint16{}}
	for i := range l.days {
		l.days[i] = d.AddDate(0, 0, i-1).Format(time.DateOnly)
	}
	from, to := l.days[0], d.AddDate(0, 0, 2).Format(time.DateOnly)
	endOfDate := l.days[2] // times sort as text: "2026-11-22" < "2026-11-22T00:00..."

	var arena strings.Builder
	err = db.View(ctx, func(tx *sql.Tx) error {
		// One pass over payments: the captures of the window, and the
		// sales that no bank settles. payments has no index on
		// captured_at and needs none: a night's batch reads the table
		// once, in storage order.
		rows, err := tx.QueryContext(ctx, `SELECT p.id, p.status, p.gateway, p.bank_auth_id, p.captured_amount,
			p.amount + p.tip_amount, p.currency, p.captured_at, p.created_at,
			CASE WHEN p.status = 'declined_after_forward' THEN coalesce((SELECT max(e.at) FROM payment_events e
				WHERE e.payment_id = p.id AND e.to_status = 'declined_after_forward'), p.updated_at) ELSE '' END
			FROM payments p
			WHERE p.method = 'card' AND (
				(p.status IN (`+captureStatuses+`) AND p.captured_at >= ? AND p.captured_at < ?)
				OR (p.status = 'stored' AND p.created_at < ?)
				OR p.status = 'declined_after_forward')`, from, to, endOfDate)
		if err != nil {
			return fmt.Errorf("read payments: %w", err)
		}
		defer rows.Close()
		var id, status, gw, bankID, currency, capturedAt, createdAt, declinedAt sql.RawBytes
		var captured, sold int64
		for rows.Next() {
			if err := rows.Scan(&id, &status, &gw, &bankID, &captured, &sold, &currency, &capturedAt, &createdAt, &declinedAt); err != nil {
				return fmt.Errorf("read payments: %w", err)
			}
			switch string(status) {
			case "stored":
				l.sales = append(l.sales, sale{paymentID: string(id), gateway: string(gw), currency: string(currency),
					amount: sold, at: string(createdAt)})
				continue
			case "declined_after_forward":
				if !strings.HasPrefix(string(declinedAt), date) {
					continue
				}
				l.sales = append(l.sales, sale{paymentID: string(id), gateway: string(gw), currency: string(currency),
					amount: sold, at: string(declinedAt), declined: true})
				continue
			}
			e := entry{kind: kindCapture, amount: captured, gw: l.gateway(gw), day: l.day(capturedAt), psp: -1}
			copy(e.currency[:], currency)
			e.ref = put(&arena, id)
			e.payment = e.ref
			e.bankID = put(&arena, bankID)
			l.entries = append(l.entries, e)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read payments: %w", err)
		}

		rows, err = tx.QueryContext(ctx, `SELECT r.id, r.payment_id, p.gateway, r.bank_refund_id, r.amount, p.currency, r.updated_at
			FROM refunds r JOIN payments p ON p.id = r.payment_id
			WHERE r.status = 'refunded' AND p.method = 'card' AND r.updated_at >= ? AND r.updated_at < ?`, from, to)
		if err != nil {
			return fmt.Errorf("read refunds: %w", err)
		}
		defer rows.Close()
		var paymentID, updatedAt sql.RawBytes
		var amount int64
		for rows.Next() {
			if err := rows.Scan(&id, &paymentID, &gw, &bankID, &amount, &currency, &updatedAt); err != nil {
				return fmt.Errorf("read refunds: %w", err)
			}
			e := entry{kind: kindRefund, amount: -amount, gw: l.gateway(gw), day: l.day(updatedAt), psp: -1}
			copy(e.currency[:], currency)
			e.ref = put(&arena, id)
			e.payment = put(&arena, paymentID)
			e.bankID = put(&arena, bankID)
			l.entries = append(l.entries, e)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read refunds: %w", err)
		}
		return l.safStatuses(ctx, tx)
	})
	if err != nil {
		return nil, fmt.Errorf("load ledger of %s: %w", date, err)
	}
	l.text = arena.String()
	l.byRef = make(map[string]int32, len(l.entries))
	for i := range l.entries {
		l.byRef[l.str(l.entries[i].ref)] = int32(i)
	}
	return l, nil
}

// safStatuses adds store-and-forward's own word (queued, held, expired,
// ...) to the stored sales, when that table exists: reconciliation does
// not depend on it, status stored alone means not forwarded.
func (l *Ledger) safStatuses(ctx context.Context, tx *sql.Tx) error {
	if len(l.sales) == 0 {
		return nil
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'saf_records'`).Scan(&n); err != nil {
		return fmt.Errorf("look for saf_records: %w", err)
	}
	if n == 0 {
		return nil
	}
	stmt, err := tx.PrepareContext(ctx, `SELECT status FROM saf_records WHERE payment_id = ?`)
	if err != nil {
		return fmt.Errorf("read saf_records: %w", err)
	}
	defer stmt.Close()
	for i := range l.sales {
		s := &l.sales[i]
		if s.declined {
			continue
		}
		err := stmt.QueryRowContext(ctx, s.paymentID).Scan(&s.safStatus)
		if err != nil && err != sql.ErrNoRows {
			return fmt.Errorf("read saf_records: %w", err)
		}
	}
	return nil
}

func put(b *strings.Builder, s []byte) span {
	sp := span{off: uint32(b.Len()), n: uint32(len(s))}
	b.Write(s)
	return sp
}

func (l *Ledger) gateway(name []byte) uint16 {
	if i, ok := l.gwIndex[string(name)]; ok {
		return i
	}
	i := uint16(len(l.gateways))
	l.gateways = append(l.gateways, string(name))
	l.gwIndex[string(name)] = i
	return i
}

// day places a stored time in the window: -1, 0 or +1 around the date.
func (l *Ledger) day(at []byte) int8 {
	switch {
	case len(at) >= 10 && string(at[:10]) == l.days[0]:
		return -1
	case len(at) >= 10 && string(at[:10]) == l.days[2]:
		return 1
	}
	return 0
}

// lookupBankID finds a record by the bank's own id (bank_auth_id or
// bank_refund_id), for rows whose merchant_reference is empty or not the
// store's. The index is built on first use: a clean report never needs it.
func (l *Ledger) lookupBankID(psp string) (int32, bool) {
	if l.byBankID == nil {
		l.byBankID = make(map[string]int32)
		for i := range l.entries {
			if id := l.str(l.entries[i].bankID); id != "" {
				l.byBankID[id] = int32(i)
			}
		}
	}
	i, ok := l.byBankID[psp]
	return i, ok
}

// currency returns a record's currency code as a string without an
// allocation per call: a store has a handful of currencies.
func (l *Ledger) currency(c [3]byte) string {
	for _, s := range l.currencies {
		if s[0] == c[0] && s[1] == c[1] && s[2] == c[2] {
			return s
		}
	}
	s := string(c[:])
	l.currencies = append(l.currencies, s)
	return s
}
