package reconcile

import (
	"fmt"
	"strings"
	"time"
)

// Category is where a reconciliation item landed. The names are the
// contract's (GET /v1/reconciliations/{date}).
type Category string

// Categories, in the order reports list them.
const (
	// Matched: the bank settled what the store recorded, same amount and
	// currency.
	Matched Category = "matched"
	// MissingAtBank: the store captured or refunded, the bank's report has
	// no row for it.
	MissingAtBank Category = "missing_at_bank"
	// MissingInStore: the bank settled something the store has no record
	// of (or no capture of: a voided or declined payment, a chargeback).
	MissingInStore Category = "missing_in_store"
	// AmountMismatch: both sides have it, the amounts differ.
	AmountMismatch Category = "amount_mismatch"
	// CurrencyMismatch: both sides have it, in different currencies.
	CurrencyMismatch Category = "currency_mismatch"
	// DuplicateAtBank: the bank charged (or refunded) the same reference
	// twice under different psp_references. A re-sent identical row is not
	// one: it is counted once and noted.
	DuplicateAtBank Category = "duplicate_at_bank"
	// NotForwarded: a card sale accepted offline that is still waiting in
	// store-and-forward (or expired there): no bank has it yet.
	NotForwarded Category = "not_forwarded"
	// DeclinedAfterForward: a sale accepted offline that the bank declined
	// when it was forwarded: the goods are gone, the money is not coming.
	DeclinedAfterForward Category = "declined_after_forward"
)

// Categories lists every category in report order.
var Categories = []Category{Matched, MissingAtBank, MissingInStore, AmountMismatch, CurrencyMismatch,
	DuplicateAtBank, NotForwarded, DeclinedAfterForward}

func (c Category) rank() int {
	for i, x := range Categories {
		if x == c {
			return i
		}
	}
	return len(Categories)
}

// Status of a run.
type Status string

// Run statuses: Clean means every item matched and every row could be
// read (exit code 0); anything else needs a person (exit code 1).
const (
	Clean         Status = "matched"
	Discrepancies Status = "discrepancies"
)

// Report is one business date's reconciliation, as GET
// /v1/reconciliations/{date} serves it and the JSON report file holds it.
// Money is int64 minor units of the item's ISO 4217 currency, signed the
// way the bank's report signs it: captures positive, refunds and
// chargebacks negative.
type Report struct {
	Date       string    `json:"date"`
	Status     Status    `json:"status"`
	RunID      int64     `json:"run_id,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	Summary    Summary   `json:"summary"`
	// Problems are the rows of the banks' reports that could not be read,
	// with their line numbers.
	Problems []Problem `json:"problems"`
	Items    []Item    `json:"items"`
}

// Summary is what a manager reads first: totals per bank and per category.
type Summary struct {
	Banks      []BankTotals                `json:"banks"`
	Categories map[Category]CategoryTotals `json:"categories"`
	Items      int                         `json:"items"`
	// Discrepancies counts the items that need a person: every category
	// but matched.
	Discrepancies int `json:"discrepancies"`
	// MalformedRows counts report rows that could not be read.
	MalformedRows int `json:"malformed_rows"`
	// ResentRows counts identical rows a bank sent again (a re-sent
	// batch): each was counted once.
	ResentRows int `json:"resent_rows"`
	// OtherMerchantRows counts rows of the bank's other merchants,
	// ignored.
	OtherMerchantRows int `json:"other_merchant_rows"`
	// SettledInNeighbourFile counts store records of this date that the
	// report of the day before or after settled: reported by that day's
	// run, not missing here.
	SettledInNeighbourFile int `json:"settled_in_neighbour_file"`
}

// BankTotals are one bank's report: what it says it paid the store.
type BankTotals struct {
	Gateway string `json:"gateway"`
	// Source is where the report came from: a file path or the bank's
	// settlement endpoint.
	Source string `json:"source"`
	// Rows counts the rows read (the store's, once each).
	Rows       int              `json:"rows"`
	Currencies []CurrencyTotals `json:"currencies"`
}

// CurrencyTotals are a bank's totals in one currency: gross (captures
// minus refunds and chargebacks), fees (negative) and net = gross + fees.
type CurrencyTotals struct {
	Currency string `json:"currency"`
	Gross    int64  `json:"gross"`
	Fees     int64  `json:"fees"`
	Net      int64  `json:"net"`
}

// CategoryTotals counts one category's items and sums their amounts per
// currency on each side.
type CategoryTotals struct {
	Count       int              `json:"count"`
	StoreAmount map[string]int64 `json:"store_amount"`
	BankAmount  map[string]int64 `json:"bank_amount"`
}

// Problem is a row of a bank's report that could not be read. Reading
// went on with the next row; the row's money is in nobody's totals.
type Problem struct {
	Gateway string `json:"gateway"`
	Line    int    `json:"line"`
	EndLine int    `json:"end_line,omitempty"`
	Error   string `json:"error"`
}

// Item is one line of a report: a settlement row, a store record, or
// both, and the category they landed in. The first seven fields are the
// contract's.
type Item struct {
	Category     Category `json:"category"`
	Gateway      string   `json:"gateway"`
	PaymentID    string   `json:"payment_id"`
	PSPReference string   `json:"psp_reference"`
	StoreAmount  int64    `json:"store_amount"`
	BankAmount   int64    `json:"bank_amount"`
	// Detail is a sentence a manager understands.
	Detail string `json:"detail"`

	// Kind is capture, refund, chargeback or sale (a sale no bank has).
	Kind     string `json:"kind"`
	RefundID string `json:"refund_id,omitempty"`
	// MerchantReference is the reference the bank echoed, when it is not
	// the payment id (a refund's id, an unknown reference).
	MerchantReference string `json:"merchant_reference,omitempty"`
	Currency          string `json:"currency"`
	// BankCurrency is set when it differs from Currency.
	BankCurrency string `json:"bank_currency,omitempty"`
	// StoreDate is the business date of the store's record, when it is
	// not the report's date.
	StoreDate string `json:"store_date,omitempty"`
	// Line is the line of the row in the bank's report.
	Line       int         `json:"line,omitempty"`
	Resolution *Resolution `json:"resolution,omitempty"`

	// rowHash is the hash of the row that settled the item: another
	// night's run tells a re-sent copy of it from a second settlement.
	rowHash uint64
}

// Discrepancy reports whether the item needs a person.
func (it Item) Discrepancy() bool { return it.Category != Matched }

// key identifies an item across re-runs of the same date, so that a
// manager's decision on its proposal survives a re-run.
func (it Item) key() string {
	return strings.Join([]string{string(it.Category), it.Gateway, it.Kind, it.PaymentID, it.RefundID,
		it.PSPReference, it.MerchantReference}, "|")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, one)
	}
	return fmt.Sprintf("%d %s", n, many)
}
