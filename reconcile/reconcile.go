package reconcile

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"iter"
	"os"
	"slices"
	"storepay/gateway"
	"strconv"
	"strings"
	"sync"
	"time"

	"storepay/migrations"
	"storepay/orders"
)

// Source is one bank's settlement report for the date reconciled.
type Source struct {
	// Gateway is the bank's name in the store's config.
	Gateway string
	// MerchantID is the store's merchant id at that bank: rows of the
	// bank's other merchants are ignored. Empty keeps every row.
	MerchantID string
	// Name says where the report came from (a path, the bank's URL), for
	// the report and error messages.
	Name string
	// Open opens the report. The reader is read once, front to back.
	Open func(ctx context.Context) (io.ReadCloser, error)
}

// FileSource is a report read from a file.
func FileSource(gateway, merchantID, path string) Source {
	return Source{Gateway: gateway, MerchantID: merchantID, Name: path,
		Open: func(context.Context) (io.ReadCloser, error) { return os.Open(path) }}
}

// BytesSource is a report already in memory (fetched from the bank).
func BytesSource(gateway, merchantID, name string, report []byte) Source {
	return Source{Gateway: gateway, MerchantID: merchantID, Name: name,
		Open: func(context.Context) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(report)), nil }}
}

// Input is one reconciliation to run.
type Input struct {
	// Date is the business date, YYYY-MM-DD (UTC).
	Date string
	// Sources are the banks' reports of Date, one per bank.
	Sources []Source
	// Now stamps the run. Nil means time.Now.
	Now func() time.Time
}

// Result is a reconciliation computed and not necessarily saved yet. It
// keeps the matched items compact (a million of them cost a few dozen
// bytes each) and materializes them one at a time in [Result.Items].
type Result struct {
	Date       string
	Status     Status
	RunID      int64 // set by Save
	StartedAt  time.Time
	FinishedAt time.Time
	Summary    Summary
	Problems   []Problem

	ledger        *Ledger
	srcGateways   []string // source index → gateway
	discrepancies []Item
	psps          []string // psp_references of settled rows that differ from the store's bank id
	withdraw      []string // store refs whose missing_at_bank proposals of other dates this run settles
}

// ErrSource marks a bank report that could not be opened or read at all
// (not one bad row: those become Problems). A run with such a source is
// not run: every record of that bank would look missing.
var ErrSource = errors.New("settlement report unreadable")

// Reconcile loads the store's ledger around in.Date and reconciles it
// against every source. It reads the database (the ledger, and the runs
// of the neighbouring dates) but writes nothing: [Save] records the
// result. Errors: ErrSource (wrapped, naming the bank) for a report that
// cannot be read at all; database errors.
func Reconcile(ctx context.Context, db *migrations.DB, in Input) (*Result, error) {
	now := in.Now
	if now == nil {
		now = time.Now
	}
	started := now().UTC()
	l, err := LoadLedger(ctx, db, in.Date)
	if err != nil {
		return nil, err
	}
	res, err := Match(ctx, db, l, in.Sources)
	if err != nil {
		return nil, err
	}
	res.StartedAt, res.FinishedAt = started, now().UTC()
	return res, nil
}

// Match reconciles a loaded ledger against the sources: the work of
// [Reconcile] after the ledger is read. Each report is streamed once; a
// row finds its store record by merchant_reference in the ledger's index
// (by psp_reference when the reference is unusable).
func Match(ctx context.Context, db *migrations.DB, l *Ledger, sources []Source) (*Result, error) {
	res := &Result{Date: l.Date, ledger: l, Summary: Summary{Banks: []BankTotals{}}}
	m := &matcher{res: res, l: l, db: db, seen: map[string]struct{}{}}
	inRun := map[uint16]bool{}
	for i, src := range sources {
		if slices.Contains(res.srcGateways, src.Gateway) {
			return nil, fmt.Errorf("%s: two settlement reports for one bank", src.Gateway)
		}
		res.srcGateways = append(res.srcGateways, src.Gateway)
		m.src, m.gw = uint16(i), l.gateway(src.Gateway)
		inRun[m.gw] = true
		if err := m.read(ctx, src); err != nil {
			return nil, err
		}
	}
	if err := m.finish(ctx, inRun); err != nil {
		return nil, err
	}
	return res, nil
}

// bankRow is a row kept for the report: a row the store has no record of,
// or a second charge.
type bankRow struct {
	Row
	gateway string
	src, gw uint16 // the report it came from, and its bank
	hash    uint64 // of the whole row, before keep dropped fields

	otherGW     string // the store recorded the reference at this other bank
	entry       int32  // the store record it duplicates, -1 for none
	conflicting bool   // same psp_reference as the settled row, another row
	earlier     earlier
}

type matcher struct {
	res  *Result
	l    *Ledger
	db   *migrations.DB
	src  uint16
	gw   uint16
	seen map[string]struct{} // rows that settled no store record (fees, chargebacks, unknown references), to tell a re-sent copy

	totals    map[string]*CurrencyTotals
	bank      *BankTotals
	unmatched []bankRow
	dupes     []bankRow
}

// read streams one report. Parsing the CSV and matching its rows run in
// two goroutines, batch by batch: each takes about half the time, and the
// batch runs on machines with a core to spare at night.
func (m *matcher) read(ctx context.Context, src Source) error {
	rc, err := src.Open(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w: %w", src.Gateway, ErrSource, err)
	}
	defer rc.Close()
	sr, err := NewSettlementReader(rc)
	if err != nil {
		return fmt.Errorf("%s (%s): %w: %w", src.Gateway, src.Name, ErrSource, err)
	}
	m.res.Summary.Banks = append(m.res.Summary.Banks, BankTotals{Gateway: src.Gateway, Source: src.Name, Currencies: []CurrencyTotals{}})
	m.bank = &m.res.Summary.Banks[len(m.res.Summary.Banks)-1]
	m.totals = map[string]*CurrencyTotals{}

	batches, stop := parse(sr)
	defer stop() // before rc.Close: the parser must be done reading
	for batch := range batches {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for _, pr := range batch.rows {
			var re *RowError
			switch {
			case errors.As(pr.err, &re):
				m.res.Problems = append(m.res.Problems, Problem{Gateway: src.Gateway, Line: re.Line, EndLine: re.EndLine, Error: re.Err.Error()})
			case pr.err != nil:
				return fmt.Errorf("%s (%s): %w: %w", src.Gateway, src.Name, ErrSource, pr.err)
			case src.MerchantID != "" && pr.row.MerchantID != src.MerchantID:
				m.res.Summary.OtherMerchantRows++
			default:
				m.row(pr.row, src.Gateway)
			}
		}
		batch.done()
	}
	for _, t := range m.totals {
		m.bank.Currencies = append(m.bank.Currencies, *t)
	}
	slices.SortFunc(m.bank.Currencies, func(a, b CurrencyTotals) int { return strings.Compare(a.Currency, b.Currency) })
	return nil
}

// parsed is a row read, or why it could not be.
type parsed struct {
	row Row
	err error
}

// rowBatch is a batch of parsed rows; done hands its buffer back.
type rowBatch struct {
	rows []parsed
	done func()
}

const parseBatch = 512

// parse reads sr in its own goroutine and hands the rows over in batches,
// reusing a few buffers. The batches end at the end of the input or after
// an error that is not a RowError. stop ends the reading early and waits
// for the goroutine; call it before closing the input.
func parse(sr *SettlementReader) (<-chan rowBatch, func()) {
	out := make(chan rowBatch, 2)
	free := make(chan []parsed, 4)
	for range cap(free) {
		free <- make([]parsed, 0, parseBatch)
	}
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		defer close(out)
		for {
			var buf []parsed
			select {
			case buf = <-free:
			case <-quit:
				return
			}
			buf = buf[:0]
			last := false
			for len(buf) < parseBatch {
				r, err := sr.Next()
				if errors.Is(err, io.EOF) {
					last = true
					break
				}
				buf = append(buf, parsed{row: r, err: err})
				var re *RowError
				if err != nil && !errors.As(err, &re) {
					last = true
					break
				}
			}
			b := rowBatch{rows: buf, done: func() { free <- buf }}
			select {
			case out <- b:
			case <-quit:
				return
			}
			if last {
				return
			}
		}
	}()
	var once sync.Once
	return out, func() {
		once.Do(func() { close(quit) })
		<-finished
	}
}

func (m *matcher) total(r *Row, sign int64) {
	t := m.totals[r.Currency]
	if t == nil {
		t = &CurrencyTotals{Currency: strings.Clone(r.Currency)}
		m.totals[t.Currency] = t
	}
	t.Gross += sign * r.Gross
	t.Fees += sign * r.Fee
	t.Net += sign * r.Net
	m.bank.Rows += int(sign)
}

// resentOther reports whether a row that settles no store record was
// already seen in this report (a re-sent batch).
// Only an identical row is a re-sent one: two fees under one reference,
// or with none, are two fees.
func (m *matcher) resentOther(r *Row) bool {
	if m.resent(r) {
		return true
	}
	m.remember(r)
	return false
}

// hashRow hashes every field of a row, as rowKey joins them.
func hashRow(r *Row) uint64 {
	h := fnv.New64a()
	for _, f := range []string{r.Type.String(), r.PSPReference, r.MerchantReference, r.BatchNumber, r.BookingDate,
		r.Currency, strconv.FormatInt(r.Gross, 10), strconv.FormatInt(r.Fee, 10), r.CardLast4, r.AuthCode} {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	return h.Sum64()
}

func rowKey(r *Row) string {
	return strings.Join([]string{r.Type.String(), r.PSPReference, r.MerchantReference, r.BatchNumber, r.BookingDate,
		r.Currency, strconv.FormatInt(r.Gross, 10), strconv.FormatInt(r.Fee, 10), r.CardLast4, r.AuthCode}, "\x00")
}

func (m *matcher) resent(r *Row) bool {
	_, ok := m.seen[rowKey(r)]
	return ok
}

func (m *matcher) remember(r *Row) { m.seen[rowKey(r)] = struct{}{} }

// captureNamedBy finds the store capture a row names: by the payment id
// as its merchant_reference, else by the authorization id as its
// psp_reference.
func (m *matcher) captureNamedBy(r *Row) (int32, bool) {
	c, ok := m.l.lookupRef(r.MerchantReference)
	if !ok || m.l.at(c).kind != kindCapture {
		c, ok = m.l.lookupBankID(r.PSPReference)
	}
	return c, ok && m.l.at(c).kind == kindCapture
}

// refundNamingItsPayment matches a Refunded row whose references name a
// capture (the payment id, or the authorization id) to a refund of that
// payment.
func (m *matcher) refundNamingItsPayment(r *Row) (int32, bool) {
	c, ok := m.captureNamedBy(r)
	if !ok {
		return 0, false
	}
	// A row naming the authorization says nothing of which refund it is;
	// one under its own id is only the refund the bank confirmed so.
	psp := r.PSPReference
	if psp == m.l.str(m.l.at(c).bankID) {
		psp = ""
	}
	return m.l.refundOf(m.l.str(m.l.at(c).payment), r.Gross, m.gw, psp)
}

func (m *matcher) row(r Row, gateway string) {
	switch r.Type {
	case Fee:
		if m.resentOther(&r) {
			m.res.Summary.ResentRows++
			return
		}
		m.total(&r, 1)
		return
	case Chargeback:
		if m.resentOther(&r) {
			m.res.Summary.ResentRows++
			return
		}
		m.total(&r, 1)
		if r.MerchantReference == "" {
			// Named only by the bank's id of the authorization: the
			// store's record of it says which payment was disputed.
			if i, ok := m.captureNamedBy(&r); ok {
				r.MerchantReference = m.l.str(m.l.at(i).payment)
			}
		}
		m.unmatched = append(m.unmatched, keep(r, gateway))
		return
	}
	want := kindCapture
	if r.Type == Refunded {
		want = kindRefund
	}
	i, ok := m.l.lookupRef(r.MerchantReference)
	if !ok || m.l.at(i).kind != want {
		i, ok = m.l.lookupBankID(r.PSPReference)
		ok = ok && m.l.at(i).kind == want
	}
	if !ok && r.Type == Refunded && !m.resent(&r) {
		// The format's merchant_reference is "storepay's payment id" and
		// its psp_reference the bank's id "of the authorization or
		// refund": a bank may name a refund by its payment.
		if i, ok = m.refundNamingItsPayment(&r); ok {
			m.remember(&r) // so that a re-sent copy is told from a second refund
		}
	}
	if !ok || m.l.at(i).gw != m.gw {
		if m.resentOther(&r) {
			m.res.Summary.ResentRows++
			return
		}
		m.total(&r, 1)
		br := keep(r, gateway)
		br.src, br.gw, br.hash = m.src, m.gw, hashRow(&r)
		if ok {
			br.otherGW = m.l.gateways[m.l.at(i).gw]
		}
		m.unmatched = append(m.unmatched, br)
		return
	}
	e := m.l.at(i)
	if e.state == unmatched {
		m.settle(e, &r, m.src, hashRow(&r))
		m.total(&r, 1)
		return
	}
	// The store record is settled already by an earlier row of this report.
	// Only a copy of that very row (a re-sent batch) is harmless; the same
	// authorization settled again in another batch or at another time is
	// money taken twice.
	psp := m.psp(e)
	if e.rowHash == hashRow(&r) {
		m.res.Summary.ResentRows++
		return
	}
	m.total(&r, 1)
	d := keep(r, gateway)
	d.entry = i
	d.conflicting = psp == r.PSPReference
	if bankID := m.l.str(e.bankID); !d.conflicting && r.PSPReference == bankID && psp != bankID {
		// The row carrying the store's own authorization id came second:
		// it is the charge the store made, the earlier one the extra.
		d = bankRow{Row: Row{Line: int(e.line), PSPReference: psp, MerchantReference: r.MerchantReference,
			Type: r.Type, Currency: string(e.bankCur[:]), Gross: e.gross}, gateway: gateway, entry: i}
		d.MerchantReference = strings.Clone(d.MerchantReference)
		m.settle(e, &r, m.src, hashRow(&r))
	}
	m.dupes = append(m.dupes, d)
}

// keep copies what the report needs of a row out of the csv line.
func keep(r Row, gateway string) bankRow {
	r.BatchNumber, r.MerchantID = "", ""
	r.PSPReference = strings.Clone(r.PSPReference)
	r.MerchantReference = strings.Clone(r.MerchantReference)
	r.Currency = strings.Clone(r.Currency)
	r.BookingDate = strings.Clone(r.BookingDate)
	r.CardLast4, r.AuthCode = "", ""
	return bankRow{Row: r, gateway: gateway, entry: -1}
}

// pairRefundsByPayment settles, once every row is read, a refund of the
// store that no row settled with a Refunded row that settled nothing,
// when the row names the same payment (by its id or its authorization's)
// for the same amount at the same bank under a refund id the store does
// not know. A bank may report refunds under ids of its own; only a refund
// both sides left over is paired, so one the bank confirmed under its own
// id, and settled by that id's row, is never taken.
func (m *matcher) pairRefundsByPayment() {
	kept := m.unmatched[:0]
	for _, br := range m.unmatched {
		if br.Type == Refunded && br.otherGW == "" {
			if i, ok := m.leftoverRefund(&br); ok {
				m.settle(m.l.at(i), &br.Row, br.src, br.hash)
				continue
			}
		}
		kept = append(kept, br)
	}
	m.unmatched = kept
}

// leftoverRefund finds the store's unsettled refund that br names by its
// payment and amount.
func (m *matcher) leftoverRefund(br *bankRow) (int32, bool) {
	c, ok := m.captureNamedBy(&br.Row)
	if !ok {
		return 0, false
	}
	for _, i := range m.l.refunds(m.l.str(m.l.at(c).payment)) {
		if e := m.l.at(i); e.state == unmatched && e.gw == br.gw && e.amount == br.Gross {
			return i, true
		}
	}
	return 0, false
}

// settle records that row r of report src, whose fields hash to hash (as
// read: a kept row has lost some), settles e.
func (m *matcher) settle(e *entry, r *Row, src uint16, hash uint64) {
	e.state, e.src, e.line, e.gross = settled, src, int32(r.Line), r.Gross
	e.rowHash = hash
	copy(e.bankCur[:], r.Currency)
	e.psp = -1
	if r.PSPReference != m.l.str(e.bankID) {
		e.psp = int32(len(m.res.psps))
		m.res.psps = append(m.res.psps, strings.Clone(r.PSPReference))
	}
}

func (m *matcher) psp(e *entry) string {
	if e.psp < 0 {
		return m.l.str(e.bankID)
	}
	return m.res.psps[e.psp]
}

// settledCategory is the category of a store record settled by a row.
func settledCategory(e *entry) Category {
	switch {
	case e.bankCur != e.currency:
		return CurrencyMismatch
	case e.gross != e.amount:
		return AmountMismatch
	}
	return Matched
}

// earlier is a store record settled by the run of another date.
type earlier struct {
	date, psp string
	rowHash   uint64 // 0 for runs made before it was kept
}

// finish decides what the streaming could not: records of the day that no
// row settled, rows settling a neighbouring day's record, the rows the
// store has no record of, and the sales no bank has; then sorts and
// totals the report.
func (m *matcher) finish(ctx context.Context, inRun map[uint16]bool) error {
	m.pairRefundsByPayment()
	if err := m.db.View(ctx, func(tx *sql.Tx) error {
		if err := m.acrossDates(ctx, tx, inRun); err != nil {
			return err
		}
		for _, d := range m.dupes {
			m.res.discrepancies = append(m.res.discrepancies, m.duplicate(d))
		}
		return m.missingInStore(ctx, tx)
	}); err != nil {
		return fmt.Errorf("reconcile %s: %w", m.l.Date, err)
	}
	m.settledDiscrepancies()
	m.unsettledSales()
	m.proposeAndMask()
	m.sortReport()
	m.summarize()
	return nil
}

// acrossDates decides the records whose fate depends on other nights'
// runs: a neighbouring day's record this report settled, and a record of
// the day that this report did not.
func (m *matcher) acrossDates(ctx context.Context, tx *sql.Tx, inRun map[uint16]bool) error {
	l := m.l
	var asks []int32
	refs := map[string]bool{}
	for i, e := range l.all {
		if inRun[e.gw] && (e.state == settled && e.day != 0 || e.state == unmatched && e.day == 0) {
			asks = append(asks, i)
			if e.state == settled {
				refs[l.str(e.ref)] = true
			}
		}
	}
	for _, i := range asks {
		if e := l.at(i); e.state == unmatched {
			refs[l.str(e.ref)] = true
		}
	}
	hist, err := settledByOtherRuns(ctx, tx, l.Date, refs)
	if err != nil {
		return err
	}
	unreadable := map[string]int{}
	for _, p := range m.res.Problems {
		unreadable[p.Gateway]++
	}
	for _, i := range asks {
		prev, found := hist[l.str(l.at(i).ref)]
		m.acrossDate(i, prev, found, unreadable)
	}
	return nil
}

// acrossDate decides one record of acrossDates, given what another
// night's run settled of it (prev, if found).
func (m *matcher) acrossDate(i int32, prev earlier, found bool, unreadable map[string]int) {
	res, l := m.res, m.l
	e := l.at(i)
	switch {
	case e.state == settled:
		// If that day's (or another neighbour's) run settled the
		// record already, this row is a copy or a second charge.
		if !found {
			res.withdraw = append(res.withdraw, l.str(e.ref))
			return
		}
		e.state = settledElsewhere
		// The very row that night's report carried is a re-sent
		// batch; any other row (another batch, another amount) is
		// the money taken again.
		if prev.rowHash == e.rowHash || prev.rowHash == 0 && prev.psp == m.psp(e) {
			res.Summary.ResentRows++
			m.untotal(e)
			return
		}
		m.dupes = append(m.dupes, bankRow{Row: Row{Line: int(e.line), PSPReference: m.psp(e),
			MerchantReference: l.str(e.ref), Currency: string(e.bankCur[:]), Gross: e.gross},
			gateway: res.srcGateways[e.src], entry: i, earlier: prev})
	case found:
		e.state = settledElsewhere
		res.Summary.SettledInNeighbourFile++
	default:
		it := m.missingAtBank(e)
		if n := unreadable[l.gateways[e.gw]]; n > 0 {
			it.Detail += fmt.Sprintf(" %s's report has %s that could not be read: it may be one of them.",
				it.Gateway, plural(n, "row", "rows"))
		}
		res.discrepancies = append(res.discrepancies, it)
	}
}

// settledDiscrepancies adds the records a row settled with another
// amount or currency.
func (m *matcher) settledDiscrepancies() {
	for _, e := range m.l.all {
		if e.state == settled {
			if c := settledCategory(e); c != Matched {
				m.res.discrepancies = append(m.res.discrepancies, m.settledItem(e, c))
			}
		}
	}
}

// unsettledSales adds the sales no bank has. A sale a bank settled after
// all (the store holds it as queued, or as declined when forwarded) is
// the settlement's missing_in_store item, which says what the store
// recorded; a second item saying no bank has it would contradict it, and
// proposing to forward it would charge the card twice.
func (m *matcher) unsettledSales() {
	res := m.res
	settledSales := map[string]bool{}
	for _, it := range res.discrepancies {
		if it.Category == MissingInStore && it.Kind == "capture" {
			settledSales[it.PaymentID] = true
		}
	}
	for _, s := range m.l.sales {
		if !settledSales[s.paymentID] {
			res.discrepancies = append(res.discrepancies, saleItem(s, m.l.Date))
		}
	}
}

// proposeAndMask gives every item without one its proposed resolution,
// and masks card numbers in whatever came from a bank's report: text
// from outside, where a card number carried in a reference or a type is
// never kept or shown.
func (m *matcher) proposeAndMask() {
	res := m.res
	for i := range res.discrepancies {
		it := &res.discrepancies[i]
		if it.Resolution == nil {
			propose(it, "")
		}
		it.PaymentID, it.PSPReference = gateway.MaskPANs(it.PaymentID), gateway.MaskPANs(it.PSPReference)
		it.MerchantReference, it.Detail = gateway.MaskPANs(it.MerchantReference), gateway.MaskPANs(it.Detail)
		if it.Resolution != nil {
			it.Resolution.Description = gateway.MaskPANs(it.Resolution.Description)
		}
	}
	for i := range res.psps {
		res.psps[i] = gateway.MaskPANs(res.psps[i])
	}
	for i := range res.Problems {
		res.Problems[i].Error = gateway.MaskPANs(res.Problems[i].Error)
	}
}

// sortReport puts the items and the problems in the report's order.
func (m *matcher) sortReport() {
	res := m.res
	slices.SortFunc(res.discrepancies, func(a, b Item) int {
		return cmp.Or(cmp.Compare(a.Category.rank(), b.Category.rank()), strings.Compare(a.Gateway, b.Gateway),
			strings.Compare(a.PaymentID, b.PaymentID), strings.Compare(a.RefundID, b.RefundID),
			strings.Compare(a.MerchantReference, b.MerchantReference), strings.Compare(a.PSPReference, b.PSPReference),
			cmp.Compare(a.Line, b.Line))
	})
	slices.SortFunc(res.Problems, func(a, b Problem) int {
		return cmp.Or(cmp.Compare(slices.Index(res.srcGateways, a.Gateway), slices.Index(res.srcGateways, b.Gateway)), cmp.Compare(a.Line, b.Line))
	})
}

// untotal takes a settled row back out of its bank's totals: a copy of a
// row another date's report already carried.
func (m *matcher) untotal(e *entry) {
	b := &m.res.Summary.Banks[e.src]
	b.Rows--
	for i := range b.Currencies {
		if b.Currencies[i].Currency == string(e.bankCur[:]) {
			// The fee of the copy is not kept; the gross is what the bank
			// would pay twice.
			b.Currencies[i].Gross -= e.gross
			b.Currencies[i].Net -= e.gross
		}
	}
}

func (m *matcher) summarize() {
	res, l := m.res, m.l
	s := &res.Summary
	s.Categories = map[Category]CategoryTotals{}
	for _, c := range Categories {
		s.Categories[c] = CategoryTotals{StoreAmount: map[string]int64{}, BankAmount: map[string]int64{}}
	}
	add := func(it *Item) {
		t := s.Categories[it.Category]
		t.Count++
		if it.StoreAmount != 0 || it.Kind == "sale" || it.Category == Matched {
			t.StoreAmount[it.Currency] += it.StoreAmount
		}
		bc := it.Currency
		if it.BankCurrency != "" {
			bc = it.BankCurrency
		}
		if it.BankAmount != 0 || it.Category == Matched {
			t.BankAmount[bc] += it.BankAmount
		}
		s.Categories[it.Category] = t
	}
	for i := range res.discrepancies {
		add(&res.discrepancies[i])
	}
	matched := s.Categories[Matched]
	for _, e := range l.all {
		if e.state == settled && settledCategory(e) == Matched {
			matched.Count++
			matched.StoreAmount[l.currency(e.currency)] += e.amount
			matched.BankAmount[l.currency(e.currency)] += e.gross
		}
	}
	s.Categories[Matched] = matched
	s.Items = matched.Count + len(res.discrepancies)
	s.Discrepancies = len(res.discrepancies)
	s.MalformedRows = len(res.Problems)
	res.Status = Clean
	if s.Discrepancies > 0 || s.MalformedRows > 0 {
		res.Status = Discrepancies
	}
}

// Items yields every item of the report: the discrepancies (sorted by
// category, bank and payment), then the matched records in ledger order.
// Matched items are built one at a time, so a million of them never sit in
// memory together.
func (r *Result) Items() iter.Seq[Item] {
	return func(yield func(Item) bool) {
		for _, it := range r.discrepancies {
			if !yield(it) {
				return
			}
		}
		l := r.ledger
		for _, e := range l.all {
			if e.state == settled && settledCategory(e) == Matched {
				if !yield(r.settledItem(e, Matched)) {
					return
				}
			}
		}
	}
}

// Discrepancies are the items that need a person, sorted.
func (r *Result) Discrepancies() []Item { return r.discrepancies }

// Report materializes the whole report. For a large day prefer
// [Result.Items] and the writers, which stream.
func (r *Result) Report() Report {
	rep := Report{Date: r.Date, Status: r.Status, RunID: r.RunID, StartedAt: r.StartedAt, FinishedAt: r.FinishedAt,
		Summary: r.Summary, Problems: r.Problems, Items: []Item{}}
	if rep.Problems == nil {
		rep.Problems = []Problem{}
	}
	for it := range r.Items() {
		rep.Items = append(rep.Items, it)
	}
	return rep
}

// ---- items ----

func (m *matcher) settledItem(e *entry, c Category) Item { return m.res.settledItem(e, c) }

func (r *Result) settledItem(e *entry, c Category) Item {
	l := r.ledger
	it := Item{Category: c, Gateway: l.gateways[e.gw], Kind: e.kind.String(), PaymentID: l.str(e.payment),
		PSPReference: l.str(e.bankID), StoreAmount: e.amount, BankAmount: e.gross,
		Currency: l.currency(e.currency), Line: int(e.line), rowHash: e.rowHash}
	if e.psp >= 0 {
		it.PSPReference = r.psps[e.psp]
	}
	if e.kind == kindRefund {
		it.RefundID = l.str(e.ref)
	}
	if e.day != 0 {
		it.StoreDate = l.days[e.day+1]
	}
	if c == Matched {
		it.Detail = matchedDetail(r.Date, it.StoreDate)
		return it
	}
	what := "the capture of " + it.PaymentID
	if e.kind == kindRefund {
		what = "refund " + it.RefundID + " of " + it.PaymentID
	}
	if c == CurrencyMismatch {
		it.BankCurrency = string(e.bankCur[:])
		it.Detail = fmt.Sprintf("%s settled %s for %s; the store recorded %s.",
			it.Gateway, orders.FormatMoney(abs(e.gross), it.BankCurrency), what, orders.FormatMoney(abs(e.amount), it.Currency))
		return it
	}
	diff := e.gross - e.amount
	more := "more"
	if diff < 0 {
		more, diff = "less", -diff
	}
	if e.kind == kindRefund {
		// A refund is negative: "more" from the bank's side is less refunded.
		more = map[string]string{"more": "less", "less": "more"}[more]
	}
	it.Detail = fmt.Sprintf("%s settled %s for %s; the store recorded %s (%s %s).",
		it.Gateway, orders.FormatMoney(abs(e.gross), it.Currency), what, orders.FormatMoney(abs(e.amount), it.Currency), orders.FormatMoney(diff, it.Currency), more)
	return it
}

// matchedDetail is the sentence of a matched item. It is not stored with
// each of a night's matched items: [Last] writes it again from the dates.
func matchedDetail(date, storeDate string) string {
	switch {
	case storeDate == "" || storeDate == date:
		return "Settled as recorded."
	case storeDate < date:
		return "Settled as recorded, a day late: the store booked it on " + storeDate + " and the bank's batch closed after midnight."
	}
	return "Settled as recorded, in this day's report although the store booked it on " + storeDate + " (just after midnight)."
}

func (m *matcher) missingAtBank(e *entry) Item {
	l := m.l
	it := Item{Category: MissingAtBank, Gateway: l.gateways[e.gw], Kind: e.kind.String(), PaymentID: l.str(e.payment),
		PSPReference: l.str(e.bankID), StoreAmount: e.amount, Currency: l.currency(e.currency)}
	if e.kind == kindRefund {
		it.RefundID = l.str(e.ref)
		it.Detail = fmt.Sprintf("The store refunded %s of %s (%s) on %s; %s's report has no row for it.",
			orders.FormatMoney(-e.amount, it.Currency), it.PaymentID, it.RefundID, l.Date, it.Gateway)
	} else {
		it.Detail = fmt.Sprintf("The store captured %s for %s on %s; %s's report has no row for it. A capture late in the evening can settle in the next day's report: the next run will tell.",
			orders.FormatMoney(e.amount, it.Currency), it.PaymentID, l.Date, it.Gateway)
	}
	return it
}

func (m *matcher) duplicate(d bankRow) Item {
	l := m.l
	e := l.at(d.entry)
	it := Item{Category: DuplicateAtBank, Gateway: d.gateway, Kind: e.kind.String(), PaymentID: l.str(e.payment),
		PSPReference: d.PSPReference, StoreAmount: e.amount, BankAmount: d.Gross, Currency: l.currency(e.currency), Line: d.Line}
	if d.Currency != it.Currency {
		it.BankCurrency = d.Currency
	}
	if e.day != 0 {
		it.StoreDate = l.days[e.day+1]
	}
	first := m.psp(e)
	bm := orders.FormatMoney(abs(d.Gross), d.Currency)
	switch {
	case e.kind == kindRefund:
		it.RefundID = l.str(e.ref)
		it.Detail = fmt.Sprintf("%s refunded %s a second time: %s for %s besides %s; the store made one refund of %s.",
			d.gateway, it.RefundID, d.PSPReference, bm, first, orders.FormatMoney(-e.amount, it.Currency))
	case d.conflicting && e.gross == d.Gross && string(e.bankCur[:]) == d.Currency:
		it.Detail = fmt.Sprintf("%s's report settles %s twice for %s (in another batch or at another time, not a re-sent copy); the store captured %s once.",
			d.gateway, d.PSPReference, bm, orders.FormatMoney(e.amount, it.Currency))
	case d.conflicting:
		it.Detail = fmt.Sprintf("%s's report lists %s twice with different amounts (%s and %s); the store captured %s once.",
			d.gateway, d.PSPReference, orders.FormatMoney(e.gross, string(e.bankCur[:])), bm, orders.FormatMoney(e.amount, it.Currency))
	case e.state == settledElsewhere:
		it.Detail = fmt.Sprintf("%s charged %s again: %s for %s in this report, besides %s in the report of %s; the store made one payment of %s.",
			d.gateway, it.PaymentID, d.PSPReference, bm, d.earlier.psp, d.earlier.date, orders.FormatMoney(e.amount, it.Currency))
	default:
		it.Detail = fmt.Sprintf("%s charged %s twice: %s for %s besides %s; the store made one payment of %s.",
			d.gateway, it.PaymentID, d.PSPReference, bm, first, orders.FormatMoney(e.amount, it.Currency))
	}
	return it
}

func saleItem(s sale, date string) Item {
	it := Item{Gateway: s.gateway, Kind: "sale", PaymentID: s.paymentID, StoreAmount: s.amount, Currency: s.currency}
	day := s.at
	if len(day) >= 10 {
		day = day[:10]
	}
	if day != date {
		it.StoreDate = day
	}
	if s.declined {
		it.Category, it.PSPReference = DeclinedAfterForward, s.bankID
		bank := "the bank"
		if s.gateway != "" {
			bank = s.gateway
		}
		it.Detail = fmt.Sprintf("%s was sold offline for %s; when it was forwarded, %s declined the card, so the store will not be paid for it.",
			s.paymentID, orders.FormatMoney(s.amount, s.currency), bank)
		return it
	}
	it.Category = NotForwarded
	switch s.safStatus {
	case "expired":
		it.Detail = fmt.Sprintf("%s was sold offline on %s for %s and expired in store-and-forward: no bank has it, and it will not be forwarded unless a manager replays it.",
			s.paymentID, day, orders.FormatMoney(s.amount, s.currency))
	case "held":
		it.Detail = fmt.Sprintf("%s was sold offline on %s for %s and is held by a manager in store-and-forward: no bank has it yet.",
			s.paymentID, day, orders.FormatMoney(s.amount, s.currency))
	default:
		it.Detail = fmt.Sprintf("%s was sold offline on %s for %s and is still waiting in store-and-forward: no bank has it yet.",
			s.paymentID, day, orders.FormatMoney(s.amount, s.currency))
	}
	return it
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}
