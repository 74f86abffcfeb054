package reconcile

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// RowType is the type column of a settlement row.
type RowType uint8

// Row types of settlement-format v1.
const (
	Settled    RowType = iota + 1 // a capture: money to the merchant
	Refunded                      // a refund: money back to the card holder
	Chargeback                    // a disputed payment taken back by the bank
	Fee                           // a fee with no merchant_reference
)

var rowTypeNames = [...]string{Settled: "Settled", Refunded: "Refunded", Chargeback: "Chargeback", Fee: "Fee"}

func (t RowType) String() string {
	if int(t) < len(rowTypeNames) && rowTypeNames[t] != "" {
		return rowTypeNames[t]
	}
	return "RowType(" + strconv.Itoa(int(t)) + ")"
}

func parseRowType(s string) (RowType, bool) {
	for t, name := range rowTypeNames {
		if name != "" && strings.EqualFold(s, name) {
			return RowType(t), true
		}
	}
	return 0, false
}

// Row is one money movement of a settlement report. Amounts are signed
// int64 minor units of Currency (ISO 4217): positive to the merchant,
// negative back to the card holder or to the bank.
//
// The strings of a Row share one allocation with the whole line (that is
// how encoding/csv hands them out): clone a field that must outlive the
// row, or the line stays in memory with it.
type Row struct {
	Line              int // line number of the row in the file, from 1 (the header)
	BatchNumber       string
	MerchantID        string
	PSPReference      string
	MerchantReference string
	Type              RowType
	BookingDate       string
	Currency          string
	Gross, Fee, Net   int64
	CardLast4         string
	AuthCode          string
}

// RowError is a row that could not be read. It names its lines (a broken
// quote can swallow the lines after it) so that someone can find it in the
// file; reading goes on with the next row.
type RowError struct {
	Line, EndLine int
	Err           error
}

func (e *RowError) Error() string {
	if e.EndLine > e.Line {
		return fmt.Sprintf("lines %d-%d: %v", e.Line, e.EndLine, e.Err)
	}
	return fmt.Sprintf("line %d: %v", e.Line, e.Err)
}

func (e *RowError) Unwrap() error { return e.Err }

// Columns of settlement-format v1. Reports are matched by header name, in
// any order; unknown columns are ignored.
const (
	colBatch = iota
	colMerchant
	colPSP
	colReference
	colType
	colBooking
	colCurrency
	colGross
	colFee
	colNet
	colLast4
	colAuthCode
	numColumns
)

var columnNames = [numColumns]string{
	colBatch: "batch_number", colMerchant: "merchant_id", colPSP: "psp_reference",
	colReference: "merchant_reference", colType: "type", colBooking: "booking_date",
	colCurrency: "currency", colGross: "gross_amount", colFee: "fee_amount", colNet: "net_amount",
	colLast4: "card_last4", colAuthCode: "auth_code",
}

// requiredColumns are those reconciliation cannot do without; a report
// lacking one cannot be read at all. The others default to empty (fee 0,
// net = gross + fee).
var requiredColumns = []int{colMerchant, colPSP, colReference, colType, colCurrency, colGross}

// SettlementReader reads a settlement report (settlement-format.md) one
// row at a time, holding one line in memory: a day of a busy store is
// never loaded whole.
//
// It survives what real files do: a UTF-8 byte-order mark, quoted fields
// (a quoted field may span lines), CRLF line ends, columns in another
// order, unknown columns, blank lines, the header repeated (two batches
// concatenated). A row it cannot read is returned as a *RowError with its
// line number and the next call carries on with the following line: a
// stray quote costs its own line, never the rows after it.
type SettlementReader struct {
	recs   *records
	index  [numColumns]int // column position of each field, -1 when absent
	header []string
	width  int
}

// NewSettlementReader reads the header of a report. An empty input or a
// header without a required column is an error: nothing of that report
// could be reconciled.
func NewSettlementReader(r io.Reader) (*SettlementReader, error) {
	recs := &records{br: bufio.NewReaderSize(&bomSkipper{r: r}, 64<<10)}
	var header []string
	var err error
	for {
		header, _, err = recs.read(-1)
		if err != nil || !blank(header) {
			break
		}
	}
	if errors.Is(err, io.EOF) {
		return nil, errors.New("settlement report is empty: not even a header")
	}
	if err != nil {
		return nil, fmt.Errorf("settlement report header: %w", err)
	}
	s := &SettlementReader{recs: recs, width: len(header)}
	for i := range s.index {
		s.index[i] = -1
	}
	for pos, name := range header {
		name = strings.ToLower(strings.TrimSpace(name))
		s.header = append(s.header, name)
		for col, want := range columnNames {
			if name == want && s.index[col] < 0 {
				s.index[col] = pos
			}
		}
	}
	var missing []string
	for _, col := range requiredColumns {
		if s.index[col] < 0 {
			missing = append(missing, columnNames[col])
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("settlement report header lacks %s (header: %s)",
			strings.Join(missing, ", "), strings.Join(s.header, ","))
	}
	return s, nil
}

// Next returns the next row, io.EOF after the last, or a *RowError for a
// row that cannot be read (call Next again to go on). Any other error is
// the input failing: stop there.
func (s *SettlementReader) Next() (Row, error) {
	for {
		rec, line, err := s.recs.read(s.width)
		if err != nil {
			return Row{}, err // a *RowError, io.EOF, or the reader failed
		}
		if blank(rec) || s.isHeader(rec) {
			continue
		}
		return s.row(rec, line)
	}
}

// records splits a CSV input (RFC 4180) into records, keeping physical
// line numbers. A line without a quote is split on its commas; a line
// with quotes is parsed by encoding/csv, joined with the lines after it
// only while a quoted field is open. A record that does not parse, or
// whose lines do not make one record of the header's width, is reported
// by its first line, and the lines after it are given back to be read
// again: encoding/csv alone would glue every line up to the next quote
// into one field, and those rows would be lost.
type records struct {
	br     *bufio.Reader
	lineNo int        // number of the last physical line read
	back   []physLine // lines given back, read again before br
	fields []string
}

type physLine struct {
	no   int
	text string
}

// A quoted field may span lines, but not without bound: past these a
// record is taken for a stray quote.
const (
	maxRecordLines = 64
	maxRecordBytes = 64 << 10
)

func (r *records) line() (physLine, error) {
	if len(r.back) > 0 {
		l := r.back[0]
		r.back = r.back[1:]
		return l, nil
	}
	s, err := r.br.ReadString('\n')
	if err != nil && (!errors.Is(err, io.EOF) || s == "") {
		return physLine{}, err
	}
	r.lineNo++
	s = strings.TrimSuffix(s, "\n")
	s = strings.TrimSuffix(s, "\r")
	return physLine{r.lineNo, s}, nil
}

// read returns the next record and its first line. width, when not
// negative, is the number of fields a record spanning lines must have.
// The fields are valid until the next call.
func (r *records) read(width int) ([]string, int, error) {
	first, err := r.line()
	if err != nil {
		return nil, 0, err
	}
	if strings.IndexByte(first.text, '"') < 0 {
		r.fields = r.fields[:0]
		text := first.text
		for {
			i := strings.IndexByte(text, ',')
			if i < 0 {
				break
			}
			r.fields = append(r.fields, text[:i])
			text = text[i+1:]
		}
		return append(r.fields, text), first.no, nil
	}
	lines := []physLine{first}
	text := first.text
	for strings.Count(text, `"`)%2 == 1 && len(lines) < maxRecordLines && len(text) < maxRecordBytes {
		l, err := r.line()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, 0, err
		}
		lines = append(lines, l)
		text += "\n" + l.text
	}
	fail := func(err error) ([]string, int, error) {
		r.back = append(append([]physLine(nil), lines[1:]...), r.back...)
		return nil, 0, &RowError{Line: first.no, Err: err}
	}
	if strings.Count(text, `"`)%2 == 1 {
		return fail(errors.New(`a quoted field is never closed (a stray '"')`))
	}
	c := csv.NewReader(strings.NewReader(text))
	c.FieldsPerRecord = -1
	c.TrimLeadingSpace = true
	rec, err := c.Read()
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fail(err)
	}
	if len(lines) > 1 && width >= 0 && len(rec) != width {
		return fail(fmt.Errorf("%d fields, the header has %d (a stray '\"'?)", len(rec), width))
	}
	return rec, first.no, nil
}

func (s *SettlementReader) row(rec []string, line int) (Row, error) {
	if len(rec) != s.width {
		// A row longer than the header is as unreadable as a shorter one:
		// an unquoted "14,50" would shift every field after it.
		return Row{}, &RowError{Line: line, Err: fmt.Errorf("%d fields, the header has %d", len(rec), s.width)}
	}
	get := func(col int) string {
		if i := s.index[col]; i >= 0 {
			return strings.TrimSpace(rec[i])
		}
		return ""
	}
	r := Row{Line: line, BatchNumber: get(colBatch), MerchantID: get(colMerchant), PSPReference: get(colPSP),
		MerchantReference: get(colReference), BookingDate: get(colBooking), Currency: get(colCurrency),
		CardLast4: get(colLast4), AuthCode: get(colAuthCode)}
	bad := func(format string, args ...any) (Row, error) {
		return Row{}, &RowError{Line: line, Err: fmt.Errorf(format, args...)}
	}
	var ok bool
	if r.Type, ok = parseRowType(get(colType)); !ok {
		return bad("type %q is not Settled, Refunded, Chargeback or Fee", get(colType))
	}
	if !validCurrency(r.Currency) {
		return bad("currency %q is not an ISO 4217 code", r.Currency)
	}
	var err error
	// A fee moves no card money: its gross may be left empty.
	if r.Gross, err = amount(get(colGross), r.Type == Fee); err != nil {
		return bad("gross_amount: %v", err)
	}
	// The format's signs: money to the merchant is positive, money back
	// to the card holder negative. A row with the other sign is not read
	// as the opposite movement.
	switch {
	case r.Type == Settled && r.Gross < 0:
		return bad("a Settled row's gross_amount must not be negative")
	case (r.Type == Refunded || r.Type == Chargeback) && r.Gross > 0:
		return bad("a %s row's gross_amount must not be positive: it is money back to the card holder", r.Type)
	}
	if r.Fee, err = amount(get(colFee), true); err != nil {
		return bad("fee_amount: %v", err)
	}
	r.Net = r.Gross + r.Fee
	if r.Net < -maxAmount || r.Net > maxAmount {
		return bad("gross_amount + fee_amount is beyond any one payment (%d minor units either way)", int64(maxAmount))
	}
	if net := get(colNet); net != "" {
		n, err := amount(net, false)
		if err != nil {
			return bad("net_amount: %v", err)
		}
		if n != r.Net {
			return bad("net_amount %d is not gross_amount + fee_amount (%d)", n, r.Net)
		}
	}
	if r.BookingDate != "" {
		if !bookingDate(r.BookingDate) {
			// The value is not echoed: a malformed field could hold anything,
			// a card number included.
			return bad("booking_date is not an RFC 3339 time")
		}
	}
	// A fee belongs to no payment; any other row must name what it
	// settles, by the store's reference or the bank's (the matcher looks
	// up either).
	if r.Type != Fee && r.PSPReference == "" && r.MerchantReference == "" {
		return bad("%s row with neither psp_reference nor merchant_reference", r.Type)
	}
	if len(r.CardLast4) > 4 {
		// A report must never carry a card number; do not keep one.
		return bad("card_last4 holds more than four characters")
	}
	return r, nil
}

// isHeader reports whether rec repeats the header: two reports
// concatenated into one file.
func (s *SettlementReader) isHeader(rec []string) bool {
	if len(rec) != len(s.header) {
		return false
	}
	for i, f := range rec {
		if !strings.EqualFold(strings.TrimSpace(f), s.header[i]) {
			return false
		}
	}
	return true
}

func blank(rec []string) bool {
	for _, f := range rec {
		if strings.TrimSpace(f) != "" {
			return false
		}
	}
	return true
}

func validCurrency(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

// maxAmount bounds every amount of a row: the most one payment can be
// (orders refuses more). A larger one is a column gone astray, often a
// card number, which would otherwise be totalled and shown as money; and
// bounded amounts cannot overflow their sums.
const maxAmount = 1_000_000_000_000

// amount parses signed integer minor units. Decimals are refused rather
// than guessed at: "14.50" could be a bank sending major units.
func amount(s string, emptyIsZero bool) (int64, error) {
	if s == "" {
		if emptyIsZero {
			return 0, nil
		}
		return 0, errors.New("empty")
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not an integer number of minor units", s)
	}
	if v < -maxAmount || v > maxAmount {
		// Not echoed: it may be a card number.
		return 0, fmt.Errorf("beyond any one payment (%d minor units either way)", int64(maxAmount))
	}
	return v, nil
}

// bomSkipper drops a UTF-8 byte-order mark at the start of the input.
type bomSkipper struct {
	r    io.Reader
	done bool
	head []byte
}

var bom = []byte{0xEF, 0xBB, 0xBF}

func (b *bomSkipper) Read(p []byte) (int, error) {
	if !b.done {
		b.done = true
		buf := make([]byte, len(bom))
		n, err := io.ReadFull(b.r, buf)
		buf = buf[:n]
		if !bytes.Equal(buf, bom) {
			b.head = buf
		}
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return 0, err
		}
	}
	if len(b.head) > 0 {
		n := copy(p, b.head)
		b.head = b.head[n:]
		return n, nil
	}
	return b.r.Read(p)
}

// bookingDate reports whether v reads as a time: RFC 3339 as the format
// says, and the forms real reports also use (a space for the T, lower
// case t and z, no zone, a bare date). Nothing is matched on it; a row is
// not thrown away for how its bank writes the time.
func bookingDate(v string) bool {
	v = strings.ToUpper(v)
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02 15:04:05Z07:00", "2006-01-02T15:04:05", "2006-01-02 15:04:05", time.DateOnly} {
		if _, err := time.Parse(layout, v); err == nil {
			return true
		}
	}
	return false
}
