package reconcile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/maphash"
	"runtime"
	"strings"
	"sync"
	"time"

	"storepay/migrations"
)

// Ledger is the store's side of a reconciliation: every card capture and
// refund whose business date lies within one day of the date reconciled,
// indexed by the reference the bank echoes, plus the sales no bank has
// settled (still in store-and-forward, or declined after forward).
//
// It is built to hold millions of records in little memory and with no
// work for the garbage collector: every string lives in a few large
// arena blocks, the records are pointer-free structs that refer to them by
// a 32-bit offset, and the index is an open-addressing table of record
// numbers. A million captures take about 130 MB.
type Ledger struct {
	// Date is the business date reconciled (YYYY-MM-DD, UTC).
	Date string

	days     [3]string // D-1, D, D+1
	text     arena
	parts    [][]entry // records, in the order of the parts read
	byRef    index     // payment id (captures) or refund id (refunds)
	byBankID index     // built on first use: rows without a usable merchant_reference
	// refundsOf lists each payment's refunds, built on first use: for a
	// Refunded row that names its payment rather than the refund.
	refundsOf map[string][]int32
	gateways  []string
	gwIndex   map[string]uint16
	sales     []sale

	currencies []string
}

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
// found for it. Strings are arena references.
type entry struct {
	ref, payment, bankID uint32 // payment id or refund id; the payment; bank_auth_id or bank_refund_id
	amount               int64  // signed, the bank's convention: refunds negative
	gross                int64  // what the settling row said
	line                 int32  // of the settling row
	psp                  int32  // -1: the row's psp_reference is bankID; else an index into Result.psps
	rowHash              uint64 // of the settling row, every field: tells a re-sent copy from a second settlement
	gw                   uint16
	src                  uint16 // source whose row settled it
	currency, bankCur    [3]byte
	kind                 entryKind
	day                  int8 // business date relative to the run's: -1, 0, +1
	state                entryState
}

type entryState uint8

const (
	unmatched        entryState = iota
	settled                     // settled by a row of this run
	settledElsewhere            // settled in another date's report: reported there
)

// sale is a card sale that no bank has settled: still stored for
// forwarding (or expired), or declined by the bank after forward.
type sale struct {
	paymentID, gateway, currency string
	bankID                       string // the bank's id of the decline
	amount                       int64
	at                           string // sold (stored) or declined (declined_after_forward)
	declined                     bool
	safStatus                    string
}

// Len is the number of store records in the window.
func (l *Ledger) Len() int {
	n := 0
	for _, p := range l.parts {
		n += len(p)
	}
	return n
}

// at returns record i (numbered across the parts).
func (l *Ledger) at(i int32) *entry {
	for _, p := range l.parts {
		if int(i) < len(p) {
			return &p[i]
		}
		i -= int32(len(p))
	}
	panic("reconcile: ledger record out of range")
}

// all yields every record with its number, in order.
func (l *Ledger) all(yield func(int32, *entry) bool) {
	var n int32
	for _, p := range l.parts {
		for i := range p {
			if !yield(n, &p[i]) {
				return
			}
			n++
		}
	}
}

func (l *Ledger) str(ref uint32) string { return l.text.get(ref) }

// isCapture tests for the payment statuses whose capture a bank settles.
// Spelled with OR rather than IN: SQLite looks each row up in a temporary
// b-tree for an IN list, a third of the scan's time.
const isCapture = `(p.status = 'captured' OR p.status = 'partially_refunded' OR p.status = 'refunded')`

// sep separates the fields the ledger query packs into one column: every
// column read through database/sql costs far more than SQLite's work to
// concatenate it (a million rows: 3.4 s for six columns, 2.1 s for two).
const sep = "\x1f"

// LoadLedger reads the store's side of date (YYYY-MM-DD) from db: card
// captures (business date: the UTC date of captured_at) and refunds the
// bank confirmed (the UTC date of their updated_at) from the day before to
// the day after, card payments still stored for forwarding that were sold
// by the end of date, and payments declined after forward on date. Cash
// never reaches a bank and is left out.
//
// A large payments table is read in parallel, one rowid range per core,
// each range in its own read transaction; the batch runs at night, and a
// payment changing between two ranges' snapshots is no different from one
// changing just after the batch. It never writes.
func LoadLedger(ctx context.Context, db *migrations.DB, date string) (*Ledger, error) {
	d, err := time.Parse(time.DateOnly, date)
	if err != nil {
		return nil, fmt.Errorf("load ledger: date %q is not YYYY-MM-DD", date)
	}
	l := &Ledger{Date: date, gwIndex: map[string]uint16{}}
	for i := range l.days {
		l.days[i] = d.AddDate(0, 0, i-1).Format(time.DateOnly)
	}
	w := window{from: l.days[0], to: d.AddDate(0, 0, 2).Format(time.DateOnly), endOfDate: l.days[2], date: date}

	var lo, hi sql.NullInt64
	if err := db.Read().QueryRowContext(ctx, `SELECT min(rowid), max(rowid) FROM payments`).Scan(&lo, &hi); err != nil {
		return nil, fmt.Errorf("load ledger of %s: %w", date, err)
	}
	ranges := splitRange(lo.Int64, hi.Int64, loadParts())
	parts := make([]*partial, len(ranges)+1) // + the refunds
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i := range parts {
		parts[i] = &partial{gw: map[string]uint16{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i < len(ranges) {
				errs[i] = parts[i].payments(ctx, db, w, ranges[i])
			} else {
				errs[i] = parts[i].refunds(ctx, db, w)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("load ledger of %s: %w", date, err)
	}
	for _, p := range parts {
		l.merge(p)
	}
	if err := db.View(ctx, func(tx *sql.Tx) error { return l.safStatuses(ctx, tx) }); err != nil {
		return nil, fmt.Errorf("load ledger of %s: %w", date, err)
	}
	l.byRef = newIndex(l.Len())
	l.all(func(i int32, e *entry) bool {
		l.byRef.add(l.str(e.ref), i)
		return true
	})
	return l, nil
}

// window is the span of business dates a ledger reads.
type window struct {
	from, to  string // D-1 inclusive, D+2 exclusive
	endOfDate string // D+1: what is sold before it was sold by the end of D
	date      string
}

// How a payments table is cut for reading in parallel: one part per core,
// none under minRowsPerPart rows (variables for the tests).
var (
	loadParts            = func() int { return runtime.GOMAXPROCS(0) }
	minRowsPerPart int64 = 50_000
)

// splitRange cuts [lo, hi] into at most n ranges of at least
// minRowsPerPart rows.
func splitRange(lo, hi int64, n int) [][2]int64 {
	size := hi - lo + 1
	n = int(min(int64(n), size/minRowsPerPart))
	if n < 1 {
		n = 1
	}
	out := make([][2]int64, 0, n)
	for i := int64(0); i < int64(n); i++ {
		a, b := lo+size*i/int64(n), lo+size*(i+1)/int64(n)-1
		if i == int64(n)-1 {
			b = hi
		}
		out = append(out, [2]int64{a, b})
	}
	return out
}

// partial is what one reader collects: records with references into its
// own arena, gateways numbered in its own map, sales.
type partial struct {
	text    arena
	entries []entry
	gws     []string
	gw      map[string]uint16
	sales   []sale
	err     error
}

func (p *partial) gateway(name string) uint16 {
	if i, ok := p.gw[name]; ok {
		return i
	}
	i := uint16(len(p.gws))
	p.gws = append(p.gws, name)
	p.gw[name] = i
	return i
}

func (p *partial) put(s string) uint32 {
	ref, err := p.text.put(s)
	if err != nil && p.err == nil {
		p.err = err
	}
	return ref
}

// payments reads one rowid range of payments: the captures of the window
// and the sales no bank settles. The fields are packed into one column
// (see sep).
func (p *partial) payments(ctx context.Context, db *migrations.DB, w window, r [2]int64) error {
	return db.View(ctx, func(tx *sql.Tx) error {
		// An ISO 8583 gateway settles a pre-authorization under its
		// completion's RRN, not the authorization's: the bank's id of
		// such a capture is that RRN (kept with the gateway's records).
		rows, err := tx.QueryContext(ctx, `SELECT p.status || x'1f' || p.id || x'1f' || p.gateway || x'1f' || coalesce((
					SELECT nullif(json_extract(r.record, '$.completion_rrn'), '') FROM iso_records r
					WHERE r.gateway = p.gateway AND r.id = p.bank_auth_id), p.bank_auth_id)
				|| x'1f' || p.currency || x'1f' || CASE
					WHEN `+isCapture+` THEN p.captured_at
					WHEN p.status = 'stored' THEN p.created_at
					ELSE coalesce((SELECT max(e.at) FROM payment_events e
						WHERE e.payment_id = p.id AND e.to_status = 'declined_after_forward'), p.updated_at) END,
				CASE WHEN `+isCapture+` THEN p.captured_amount ELSE p.amount + p.tip_amount END
			FROM payments p
			WHERE p.rowid BETWEEN ? AND ? AND p.method = 'card' AND (
				(`+isCapture+` AND p.captured_at >= ? AND p.captured_at < ?)
				OR (p.status = 'stored' AND p.created_at < ?)
				OR p.status = 'declined_after_forward')`, r[0], r[1], w.from, w.to, w.endOfDate)
		if err != nil {
			return fmt.Errorf("read payments: %w", err)
		}
		defer rows.Close()
		var packed sql.RawBytes
		var amount int64
		var f [6]string
		for n := 0; rows.Next(); n++ {
			if err := rows.Scan(&packed, &amount); err != nil {
				return fmt.Errorf("read payments: %w", err)
			}
			if !split(string(packed), f[:]) {
				return fmt.Errorf("read payments: a field holds a control character: %q", packed)
			}
			status, id, gw, bankID, currency, at := f[0], f[1], f[2], f[3], f[4], f[5]
			switch status {
			case "stored":
				p.sales = append(p.sales, sale{paymentID: strings.Clone(id), gateway: strings.Clone(gw),
					currency: strings.Clone(currency), amount: amount, at: strings.Clone(at)})
				continue
			case "declined_after_forward":
				if strings.HasPrefix(at, w.date) {
					p.sales = append(p.sales, sale{paymentID: strings.Clone(id), gateway: strings.Clone(gw),
						currency: strings.Clone(currency), amount: amount, at: strings.Clone(at), declined: true, bankID: strings.Clone(bankID)})
				}
				continue
			}
			e := entry{kind: kindCapture, amount: amount, gw: p.gateway(gw), day: dayOf(at, w), psp: -1}
			copy(e.currency[:], currency)
			e.ref = p.put(id)
			e.payment = e.ref
			e.bankID = p.put(bankID)
			p.entries = append(p.entries, e)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read payments: %w", err)
		}
		return p.err
	})
}

// refunds reads the refunds the banks confirmed in the window.
func (p *partial) refunds(ctx context.Context, db *migrations.DB, w window) error {
	return db.View(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT r.id || x'1f' || r.payment_id || x'1f' || p.gateway || x'1f' || r.bank_refund_id
				|| x'1f' || p.currency || x'1f' || r.updated_at, r.amount
			FROM refunds r JOIN payments p ON p.id = r.payment_id
			WHERE r.status = 'refunded' AND p.method = 'card' AND r.updated_at >= ? AND r.updated_at < ?`, w.from, w.to)
		if err != nil {
			return fmt.Errorf("read refunds: %w", err)
		}
		defer rows.Close()
		var packed sql.RawBytes
		var amount int64
		var f [6]string
		for rows.Next() {
			if err := rows.Scan(&packed, &amount); err != nil {
				return fmt.Errorf("read refunds: %w", err)
			}
			if !split(string(packed), f[:]) {
				return fmt.Errorf("read refunds: a field holds a control character: %q", packed)
			}
			e := entry{kind: kindRefund, amount: -amount, gw: p.gateway(f[2]), day: dayOf(f[5], w), psp: -1}
			copy(e.currency[:], f[4])
			e.ref = p.put(f[0])
			e.payment = p.put(f[1])
			e.bankID = p.put(f[3])
			p.entries = append(p.entries, e)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read refunds: %w", err)
		}
		return p.err
	})
}

// split cuts s at sep into exactly len(f) fields.
func split(s string, f []string) bool {
	for i := range f {
		if i == len(f)-1 {
			f[i] = s
			return !strings.Contains(s, sep)
		}
		j := strings.Index(s, sep)
		if j < 0 {
			return false
		}
		f[i], s = s[:j], s[j+1:]
	}
	return true
}

// dayOf places a stored time in the window: -1, 0 or +1 around the date.
func dayOf(at string, w window) int8 {
	switch {
	case len(at) < 10:
	case at[:10] == w.from:
		return -1
	case at[:10] == w.endOfDate:
		return 1
	}
	return 0
}

// merge takes a reader's records into the ledger: its arena blocks are
// appended, so its references move by the blocks before them, and its
// gateway numbers are mapped onto the ledger's.
func (l *Ledger) merge(p *partial) {
	base := l.text.adopt(&p.text)
	gws := make([]uint16, len(p.gws))
	for i, name := range p.gws {
		gws[i] = l.gateway(name)
	}
	for i := range p.entries {
		e := &p.entries[i]
		e.ref += base
		e.payment += base
		e.bankID += base
		e.gw = gws[e.gw]
	}
	if len(p.entries) > 0 {
		l.parts = append(l.parts, p.entries)
	}
	l.sales = append(l.sales, p.sales...)
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
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read saf_records: %w", err)
		}
	}
	return nil
}

func (l *Ledger) gateway(name string) uint16 {
	if i, ok := l.gwIndex[name]; ok {
		return i
	}
	i := uint16(len(l.gateways))
	l.gateways = append(l.gateways, name)
	l.gwIndex[name] = i
	return i
}

// lookupRef finds a record by payment id or refund id.
func (l *Ledger) lookupRef(ref string) (int32, bool) {
	return l.byRef.find(ref, func(i int32) string { return l.str(l.at(i).ref) })
}

// refundOf finds the refund of payment, at gateway gw and not settled
// yet, that a Refunded row of amount names when it names the payment (its
// id, or its authorization's) instead of the refund: the refund of that
// amount, else the payment's only unsettled refund there. psp is the
// row's own refund id ("" when the row names the authorization): a refund
// the bank confirmed under another id is another refund, never taken.
func (l *Ledger) refundOf(payment string, amount int64, gw uint16, psp string) (int32, bool) {
	var only []int32
	for _, i := range l.refunds(payment) {
		e := l.at(i)
		if e.state != unmatched || e.gw != gw {
			continue
		}
		if id := l.str(e.bankID); psp != "" && id != "" && id != psp {
			continue
		}
		if e.amount == amount {
			return i, true
		}
		only = append(only, i)
	}
	if len(only) == 1 {
		return only[0], true
	}
	return 0, false
}

// refunds lists the refund records of a payment. The index is built on
// first use: a clean report never needs it.
func (l *Ledger) refunds(payment string) []int32 {
	if l.refundsOf == nil {
		l.refundsOf = map[string][]int32{}
		l.all(func(i int32, e *entry) bool {
			if e.kind == kindRefund {
				p := l.str(e.payment)
				l.refundsOf[p] = append(l.refundsOf[p], i)
			}
			return true
		})
	}
	return l.refundsOf[payment]
}

// lookupBankID finds a record by the bank's own id (bank_auth_id or
// bank_refund_id), for rows whose merchant_reference is empty or not the
// store's. The index is built on first use: a clean report never needs it.
func (l *Ledger) lookupBankID(psp string) (int32, bool) {
	if l.byBankID.slots == nil {
		l.byBankID = newIndex(l.Len())
		l.all(func(i int32, e *entry) bool {
			if id := l.str(e.bankID); id != "" {
				l.byBankID.add(id, i)
			}
			return true
		})
	}
	return l.byBankID.find(psp, func(i int32) string { return l.str(l.at(i).bankID) })
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

// ---- arena ----

// arena holds strings in blocks of 4 MiB, each string prefixed by its
// length (one byte). A reference is block<<22 | offset: 1024 blocks, 4 GiB.
type arena struct {
	blocks []string
	cur    []byte
}

const (
	blockBits = 22
	blockSize = 1 << blockBits
	maxString = 255
)

func (a *arena) put(s string) (uint32, error) {
	if len(s) > maxString {
		return 0, fmt.Errorf("an id of %d bytes is longer than %d: %.40q", len(s), maxString, s)
	}
	if len(a.cur)+1+len(s) > blockSize || a.cur == nil {
		a.seal()
		a.cur = make([]byte, 0, blockSize)
	}
	if len(a.blocks) >= 1<<(32-blockBits) {
		return 0, errors.New("more than 4 GiB of ids")
	}
	ref := uint32(len(a.blocks))<<blockBits | uint32(len(a.cur))
	a.cur = append(a.cur, byte(len(s)))
	a.cur = append(a.cur, s...)
	return ref, nil
}

// seal turns the block being filled into an immutable string. Blocks are
// numbered from 0 as they are sealed: a reference's block number counts
// the sealed blocks before it, so the current block is sealed into the
// next slot.
func (a *arena) seal() {
	if a.cur != nil {
		a.blocks = append(a.blocks, string(a.cur))
		a.cur = nil
	}
}

func (a *arena) get(ref uint32) string {
	b := a.blocks[ref>>blockBits]
	off := ref & (blockSize - 1)
	n := uint32(b[off])
	return b[off+1 : off+1+n]
}

// adopt appends other's blocks and returns what to add to its references.
func (a *arena) adopt(other *arena) uint32 {
	other.seal()
	a.seal()
	base := uint32(len(a.blocks)) << blockBits
	a.blocks = append(a.blocks, other.blocks...)
	return base
}

// ---- index ----

// index maps a string to a record number: open addressing with linear
// probing over int32 slots (-1 is empty). The strings stay in the arena;
// the table holds no pointers, so the garbage collector never scans it.
type index struct {
	slots []int32
	mask  uint64
	seed  maphash.Seed
}

func newIndex(n int) index {
	size := 16
	for size < 2*n {
		size <<= 1
	}
	ix := index{slots: make([]int32, size), mask: uint64(size - 1), seed: maphash.MakeSeed()}
	for i := range ix.slots {
		ix.slots[i] = -1
	}
	return ix
}

// add records i under key. With two records under one key, find returns
// the one added first.
func (ix *index) add(key string, i int32) {
	for h := maphash.String(ix.seed, key) & ix.mask; ; h = (h + 1) & ix.mask {
		if ix.slots[h] < 0 {
			ix.slots[h] = i
			return
		}
	}
}

// find returns the first record whose key (keyOf) is key.
func (ix *index) find(key string, keyOf func(int32) string) (int32, bool) {
	if ix.slots == nil {
		return 0, false
	}
	for h := maphash.String(ix.seed, key) & ix.mask; ; h = (h + 1) & ix.mask {
		i := ix.slots[h]
		if i < 0 {
			return 0, false
		}
		if keyOf(i) == key {
			return i, true
		}
	}
}
