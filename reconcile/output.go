package reconcile

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"storepay/orders"
)

// WriteJSON writes the whole report as JSON, the document GET
// /v1/reconciliations/{date} answers, streaming the items one at a time.
func (r *Result) WriteJSON(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	problems := r.Problems
	if problems == nil {
		problems = []Problem{}
	}
	head, err := json.Marshal(struct {
		Date       string    `json:"date"`
		Status     Status    `json:"status"`
		RunID      int64     `json:"run_id,omitempty"`
		StartedAt  time.Time `json:"started_at"`
		FinishedAt time.Time `json:"finished_at"`
		Summary    Summary   `json:"summary"`
		Problems   []Problem `json:"problems"`
	}{r.Date, r.Status, r.RunID, r.StartedAt, r.FinishedAt, r.Summary, problems})
	if err != nil {
		return err
	}
	bw.Write(head[:len(head)-1])
	bw.WriteString(`,"items":[`)
	enc := json.NewEncoder(bw)
	first := true
	for it := range r.Items() {
		if !first {
			bw.WriteByte(',')
		}
		first = false
		// Encode appends a newline: one item per line, easy to grep.
		if err := enc.Encode(it); err != nil {
			return err
		}
	}
	bw.WriteString("]}\n")
	return bw.Flush()
}

// csvHeader is the discrepancies file of the finance team. Amounts are
// signed integer minor units, as in the banks' reports.
var csvHeader = []string{"date", "category", "gateway", "kind", "payment_id", "refund_id", "psp_reference",
	"merchant_reference", "currency", "store_amount", "bank_amount", "bank_currency", "difference", "store_date",
	"line", "detail", "proposed_action", "proposal", "proposal_status", "proposal_id"}

// WriteCSV writes the discrepancies (every item but the matched ones) as
// CSV for the finance team: one row each, with the proposed resolution.
func (r *Result) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	cw.Write(csvHeader)
	for _, it := range r.discrepancies {
		var action, desc, status, id string
		if res := it.Resolution; res != nil {
			action, desc, status = string(res.Action), res.Description, res.Status
			if res.ID != 0 {
				id = strconv.FormatInt(res.ID, 10)
			}
		}
		line := ""
		if it.Line > 0 {
			line = strconv.Itoa(it.Line)
		}
		cw.Write([]string{r.Date, string(it.Category), it.Gateway, it.Kind, it.PaymentID, it.RefundID, it.PSPReference,
			it.MerchantReference, it.Currency, strconv.FormatInt(it.StoreAmount, 10), strconv.FormatInt(it.BankAmount, 10),
			it.BankCurrency, strconv.FormatInt(it.BankAmount-it.StoreAmount, 10), it.StoreDate, line, it.Detail,
			action, desc, status, id})
	}
	cw.Flush()
	return cw.Error()
}

// summaryListLimit bounds the discrepancies listed on stdout; the CSV
// has them all.
const summaryListLimit = 50

// WriteSummary writes the human summary a manager reads in the morning:
// the verdict, each bank's totals, the count per category and each
// discrepancy in a sentence with its proposal.
func (r *Result) WriteSummary(w io.Writer) error {
	bw := bufio.NewWriter(w)
	s := &r.Summary
	verdict := "everything matched"
	if r.Status != Clean {
		verdict = plural(s.Discrepancies, "discrepancy needs", "discrepancies need") + " a person"
		if s.MalformedRows > 0 {
			verdict += ", " + plural(s.MalformedRows, "report row", "report rows") + " could not be read"
		}
	}
	fmt.Fprintf(bw, "Reconciliation of %s: %s.\n", r.Date, verdict)
	fmt.Fprintln(bw)
	for _, b := range s.Banks {
		fmt.Fprintf(bw, "%s (%s): %s\n", b.Gateway, b.Source, plural(b.Rows, "row", "rows"))
		for _, c := range b.Currencies {
			fmt.Fprintf(bw, "  gross %16s   fees %14s   net %16s\n",
				orders.FormatMoney(c.Gross, c.Currency), orders.FormatMoney(c.Fees, c.Currency), orders.FormatMoney(c.Net, c.Currency))
		}
	}
	fmt.Fprintln(bw)
	for _, c := range Categories {
		t := s.Categories[c]
		fmt.Fprintf(bw, "  %-24s %8d", c, t.Count)
		if t.Count > 0 {
			fmt.Fprintf(bw, "   store %s   bank %s", amounts(t.StoreAmount), amounts(t.BankAmount))
		}
		fmt.Fprintln(bw)
	}
	var notes []string
	if s.ResentRows > 0 {
		notes = append(notes, plural(s.ResentRows, "row was", "rows were")+" sent twice by a bank and counted once")
	}
	if s.OtherMerchantRows > 0 {
		notes = append(notes, plural(s.OtherMerchantRows, "row belongs", "rows belong")+" to other merchants and were ignored")
	}
	if s.SettledInNeighbourFile > 0 {
		notes = append(notes, plural(s.SettledInNeighbourFile, "record of this date was", "records of this date were")+
			" settled in the report of the day before or after (listed in that night's run)")
	}
	if len(notes) > 0 {
		fmt.Fprintln(bw)
		for _, n := range notes {
			fmt.Fprintf(bw, "Note: %s.\n", n)
		}
	}
	if len(r.Problems) > 0 {
		fmt.Fprintln(bw)
		fmt.Fprintln(bw, "Rows that could not be read (the rest of each report was reconciled):")
		for _, p := range r.Problems {
			lines := "line " + strconv.Itoa(p.Line)
			if p.EndLine > p.Line {
				lines = fmt.Sprintf("lines %d-%d", p.Line, p.EndLine)
			}
			fmt.Fprintf(bw, "  %s %s: %s\n", p.Gateway, lines, p.Error)
		}
	}
	if len(r.discrepancies) > 0 {
		fmt.Fprintln(bw)
		fmt.Fprintln(bw, "Discrepancies:")
		for i, it := range r.discrepancies {
			if i == summaryListLimit {
				fmt.Fprintf(bw, "  ... and %d more: see the CSV of discrepancies.\n", len(r.discrepancies)-i)
				break
			}
			fmt.Fprintf(bw, "  [%s] %s\n", it.Category, it.Detail)
			if res := it.Resolution; res != nil {
				fmt.Fprintf(bw, "      proposed: %s", res.Description)
				if res.Status != Proposed {
					fmt.Fprintf(bw, " (%s)", res.Status)
				}
				fmt.Fprintln(bw)
			}
		}
	}
	return bw.Flush()
}

func amounts(m map[string]int64) string {
	if len(m) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = orders.FormatMoney(m[k], k)
	}
	return strings.Join(parts, ", ")
}
