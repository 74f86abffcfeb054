package reconcile_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"storepay/gateway"
	"storepay/reconcile"
)

// FuzzSettlementReport reads an arbitrary bank report, row by row and
// then through a whole reconciliation against the "warts" store (a real
// database seeded once per fuzz process), and holds it to what the
// reader and the reports promise:
//
//   - no panic, and every call of Next moves on (no row read twice, no
//     endless loop);
//   - a row it accepts is sane: a known type, an ISO 4217 code, signs
//     as the format says, net = gross + fee, amounts no payment exceeds
//     (a card number in an amount column would otherwise be shown as
//     money), a reference unless it is a fee, at most four characters of
//     card_last4;
//   - a report whose header can be read is reconciled, one that cannot
//     is ErrSource; every unreadable row is a problem of the run, with
//     its line;
//   - no card number survives unmasked in anything the run shows or
//     keeps: the JSON report, the CSV of discrepancies, the summary.
func FuzzSettlementReport(f *testing.F) {
	for _, name := range []string{"clean", "categories", "warts", "neighbour"} {
		files, _ := filepath.Glob(filepath.Join("..", "testdata", "settlements", name, "*", "*.csv"))
		for _, path := range files {
			b, err := os.ReadFile(path)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Add([]byte(header + "\nb,store-042,auth_1,pay_1,Settled,,USD,4242424242424242,0,4242424242424242,,\n"))
	f.Add([]byte(header + "\nb,store-042,4111 1111 1111 1111,pay_1,Settled,,USD,1450,-72,1378,,\n"))
	f.Add([]byte(header + "\nb,store-042,auth_1,5555555555554444,Refunded,,USD,-500,0,-500,4444,\n"))
	f.Add([]byte(header + "\nb,store-042,auth_1,pay_1,4000000000000002,,USD,1,0,1,,\n"))
	f.Add([]byte(header + "\n\"b,store-042,auth_1,pay_1,Settled,,USD,1,0,1,,\n\n\n"))
	f.Add([]byte(header + "\nb,store-042,auth_1,pay_1,Settled,,USD,-9223372036854775808,-9223372036854775808,,,\n"))
	f.Add([]byte("\ufeff\r\n" + header + "\r\n"))
	f.Add([]byte(""))

	db, fx, _ := loadFixture(f, "warts")
	const date = "2026-11-21"
	f.Fuzz(func(t *testing.T, report []byte) {
		sr, herr := reconcile.NewSettlementReader(bytes.NewReader(report))
		var badLines []int
		if herr == nil {
			badLines = readRows(t, sr, bytes.Count(report, []byte("\n"))+1)
		}

		res, err := reconcile.Reconcile(context.Background(), db, reconcile.Input{Date: date,
			Sources: []reconcile.Source{reconcile.BytesSource("bank-a", fx.Banks["bank-a"], "bank-a.csv", report)}})
		switch {
		case herr != nil && !errors.Is(err, reconcile.ErrSource):
			t.Fatalf("the header cannot be read (%v), but the run says %v", herr, err)
		case herr != nil:
			return
		case err != nil:
			t.Fatalf("the header reads, but the run failed: %v", err)
		}
		if len(res.Problems) != len(badLines) {
			t.Fatalf("%d rows could not be read, the run reports %d problems: %+v", len(badLines), len(res.Problems), res.Problems)
		}
		for i, p := range res.Problems {
			if p.Line != badLines[i] {
				t.Fatalf("problem %d is at line %d, the row at line %d", i, p.Line, badLines[i])
			}
		}
		var js, sheet, summary bytes.Buffer
		if err := res.WriteJSON(&js); err != nil {
			t.Fatal(err)
		}
		if err := res.WriteCSV(&sheet); err != nil {
			t.Fatal(err)
		}
		if err := res.WriteSummary(&summary); err != nil {
			t.Fatal(err)
		}
		if s := cardNumberInJSON(t, js.Bytes()); s != "" {
			t.Fatalf("the JSON report keeps a card number: %q", s)
		}
		cells, err := csv.NewReader(&sheet).ReadAll()
		if err != nil {
			t.Fatalf("the CSV of discrepancies does not read back: %v", err)
		}
		for _, row := range cells {
			for _, cell := range row {
				if gateway.MaskPANs(cell) != cell {
					t.Fatalf("the CSV of discrepancies shows a card number: %q", cell)
				}
			}
		}
		for _, line := range strings.Split(summary.String(), "\n") {
			if gateway.MaskPANs(line) != line {
				t.Fatalf("the summary shows a card number: %q", line)
			}
		}
	})
}

// readRows reads every row of a report and checks each one it accepts;
// it returns the first lines of the rows it could not read. maxRecords
// bounds the calls: no more records than the lines of the report.
func readRows(t *testing.T, sr *reconcile.SettlementReader, maxRecords int) []int {
	t.Helper()
	var bad []int
	last := 0
	for calls := 0; ; calls++ {
		if calls > maxRecords {
			t.Fatalf("more than %d records from a report of %d lines: reading does not move on", calls, maxRecords)
		}
		r, err := sr.Next()
		if errors.Is(err, io.EOF) {
			return bad
		}
		var re *reconcile.RowError
		line := r.Line
		if errors.As(err, &re) {
			line = re.Line
			if re.EndLine != 0 && re.EndLine < re.Line {
				t.Fatalf("row error spans lines %d-%d", re.Line, re.EndLine)
			}
			bad = append(bad, re.Line)
		} else if err != nil {
			t.Fatalf("reading from memory failed: %v", err)
		} else if why := insane(r); why != "" {
			t.Fatalf("row at line %d accepted, but %s: %+v", r.Line, why, r)
		}
		if line <= last {
			t.Fatalf("a record at line %d after one at line %d", line, last)
		}
		last = line
	}
}

// maxRowAmount is the most one payment can be (orders' limit), the bound
// of any amount a row may carry.
const maxRowAmount = 1_000_000_000_000

// insane says what is wrong with an accepted row, or "".
func insane(r reconcile.Row) string {
	abs := func(v int64) int64 {
		if v < 0 {
			return -v
		}
		return v
	}
	switch {
	case r.Type < reconcile.Settled || r.Type > reconcile.Fee:
		return "its type is not one of the format's"
	case len(r.Currency) != 3 || strings.ToUpper(r.Currency) != r.Currency || strings.Trim(r.Currency, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") != "":
		return "its currency is not an ISO 4217 code"
	case r.Net != r.Gross+r.Fee:
		return "net is not gross + fee"
	case r.Type == reconcile.Settled && r.Gross < 0,
		(r.Type == reconcile.Refunded || r.Type == reconcile.Chargeback) && r.Gross > 0:
		return "its gross has the wrong sign for its type"
	case r.Gross < -maxRowAmount || abs(r.Gross) > maxRowAmount || r.Fee < -maxRowAmount || abs(r.Fee) > maxRowAmount ||
		r.Net < -maxRowAmount || abs(r.Net) > maxRowAmount:
		return "an amount is beyond any payment"
	case r.Type != reconcile.Fee && r.PSPReference == "" && r.MerchantReference == "":
		return "it names nothing it settles"
	case len(r.CardLast4) > 4:
		return "card_last4 holds more than four characters"
	case r.Line < 2:
		return "it is on the header's line"
	}
	return ""
}

// cardNumberInJSON returns a key or string of the document that holds a
// card number, or "".
func cardNumberInJSON(t *testing.T, doc []byte) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(doc, &v); err != nil {
		t.Fatalf("the JSON report is not JSON: %v", err)
	}
	var walk func(v any) string
	walk = func(v any) string {
		switch v := v.(type) {
		case string:
			if gateway.MaskPANs(v) != v {
				return v
			}
		case []any:
			for _, e := range v {
				if s := walk(e); s != "" {
					return s
				}
			}
		case map[string]any:
			for k, e := range v {
				if s := walk(k); s != "" {
					return s
				}
				if s := walk(e); s != "" {
					return s
				}
			}
		}
		return ""
	}
	return walk(v)
}
