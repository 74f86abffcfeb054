package reconcile_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"storepay/migrations"
	"storepay/reconcile"
)

const (
	pay = "pay_019aa6c1e5f07d2b8c1e4a7f3b2d" // fixture payment ids: pay + 4 characters
	rfd = "rfd_019aa7d04c2e7a61b93f0d5e8c14"
)

// items returns the items of a report in category c about payment id.
func items(rep reconcile.Report, c reconcile.Category, paymentID string) []reconcile.Item {
	var out []reconcile.Item
	for _, it := range rep.Items {
		if it.Category == c && it.PaymentID == paymentID {
			out = append(out, it)
		}
	}
	return out
}

func last(t *testing.T, db *migrations.DB, date string) reconcile.Report {
	t.Helper()
	rep, err := reconcile.Last(context.Background(), db, date)
	if err != nil {
		t.Fatalf("Last(%s): %v", date, err)
	}
	return rep
}

func TestEveryCategoryWithBothAmountsAndAProposal(t *testing.T) {
	db, f, dir := loadFixture(t, "categories")
	run(t, db, "2026-11-21", f.sources(t, dir, "2026-11-21"))
	rep := last(t, db, "2026-11-21")

	tests := []struct {
		name      string
		category  reconcile.Category
		gateway   string
		paymentID string
		refundID  string
		psp       string
		store     int64
		bank      int64
		action    reconcile.Action
	}{
		{"CaptureMatched", reconcile.Matched, "bank-a", pay + "a001", "", "auth_7Gx2mQ1a9KpL", 1450, 1450, ""},
		{"RefundMatched", reconcile.Matched, "bank-a", pay + "a006", rfd + "0001", "rfd_K3p9Wd1hC7", -1000, -1000, ""},
		{"FullyRefundedAtTheOtherBank", reconcile.Matched, "bank-b", pay + "b005", rfd + "0003", "rfd_Pq7Lz3Nb", -1800, -1800, ""},
		{"CaptureMissingAtBank", reconcile.MissingAtBank, "bank-a", pay + "a005", "", "auth_7Gx2mQ5eZ6jT", 760, 0, reconcile.ResubmitCapture},
		{"RefundMissingAtBank", reconcile.MissingAtBank, "bank-a", pay + "a006", rfd + "0002", "rfd_K3p9Wd2iD8", -500, 0, reconcile.ResubmitRefund},
		{"VoidedSaleChargedAnyway", reconcile.MissingInStore, "bank-a", pay + "a007", "", "auth_7Gx2mQ7gB5mV", 0, 1200, reconcile.ReverseCharge},
		{"UnknownReference", reconcile.MissingInStore, "bank-b", pay + "beef", "", "auth_Lm2Qv8Rt0C", 0, 2599, reconcile.Investigate},
		{"Chargeback", reconcile.MissingInStore, "bank-b", pay + "e099", "", "cb_Vt5Hs2Kd", 0, -3150, reconcile.ReviewChargeback},
		{"AmountMismatch", reconcile.AmountMismatch, "bank-a", pay + "a002", "", "auth_7Gx2mQ2bT4vN", 2380, 2830, reconcile.RefundDifference},
		{"CurrencyMismatch", reconcile.CurrencyMismatch, "bank-a", pay + "a003", "", "auth_7Gx2mQ3cW8zR", 990, 990, reconcile.Investigate},
		// The extra charge came first in the file: the row carrying the
		// store's own authorization id is still the store's payment.
		{"DoubleChargeExtra", reconcile.DuplicateAtBank, "bank-a", pay + "a004", "", "auth_9Zz8Hq2Rw4", 5200, 5200, reconcile.ReverseDuplicateCharge},
		{"DoubleChargeOwn", reconcile.Matched, "bank-a", pay + "a004", "", "auth_7Gx2mQ4dY1hS", 5200, 5200, ""},
		{"StillQueuedOffline", reconcile.NotForwarded, "", pay + "b002", "", "", 850, 0, reconcile.ForwardStored},
		{"ExpiredOffline", reconcile.NotForwarded, "", pay + "b003", "", "", 6400, 0, reconcile.ForwardStored},
		{"DeclinedAfterForward", reconcile.DeclinedAfterForward, "bank-b", pay + "b004", "", "auth_Dc4Nb004", 1299, 0, reconcile.WriteOff},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var found []reconcile.Item
			for _, it := range items(rep, tt.category, tt.paymentID) {
				if it.RefundID == tt.refundID && it.PSPReference == tt.psp {
					found = append(found, it)
				}
			}
			if len(found) != 1 {
				t.Fatalf("%d %s items for %s %s %s, want 1; report: %+v", len(found), tt.category, tt.paymentID, tt.refundID, tt.psp, rep.Items)
			}
			it := found[0]
			if it.Gateway != tt.gateway || it.StoreAmount != tt.store || it.BankAmount != tt.bank {
				t.Errorf("got %s store %d bank %d, want %s store %d bank %d", it.Gateway, it.StoreAmount, it.BankAmount,
					tt.gateway, tt.store, tt.bank)
			}
			if it.Detail == "" {
				t.Error("no sentence for the manager")
			}
			switch {
			case tt.action == "" && it.Resolution != nil:
				t.Errorf("a matched item carries a proposal %+v", it.Resolution)
			case tt.action != "" && (it.Resolution == nil || it.Resolution.Action != tt.action || it.Resolution.Status != reconcile.Proposed || it.Resolution.ID == 0):
				t.Errorf("resolution %+v, want a recorded %s proposal", it.Resolution, tt.action)
			}
		})
	}
	t.Run("NothingElse", func(t *testing.T) {
		// The items named above, the plain captures of a006, b001 and
		// b005, and nothing more.
		if got, want := len(rep.Items), len(tests)+3; got != want {
			t.Errorf("%d items, want %d", got, want)
		}
		for _, it := range rep.Items {
			if it.PaymentID == pay+"c001" {
				t.Errorf("a cash payment was reconciled: %+v", it)
			}
		}
		if rep.Status != reconcile.Discrepancies || rep.Summary.Discrepancies != 11 {
			t.Errorf("status %s with %d discrepancies, want discrepancies with 11", rep.Status, rep.Summary.Discrepancies)
		}
	})
	t.Run("BankTotals", func(t *testing.T) {
		a := rep.Summary.Banks[0]
		if a.Gateway != "bank-a" || a.Rows != 9 || len(a.Currencies) != 2 {
			t.Fatalf("bank-a totals %+v", a)
		}
		usd := a.Currencies[1]
		// Captures 1450+2830+5200+5200+3000+1200, a refund of 1000, fees
		// of every row plus the day's fee row of 500.
		if usd.Currency != "USD" || usd.Gross != 17880 || usd.Net != usd.Gross+usd.Fees || usd.Fees >= -500 {
			t.Errorf("bank-a USD totals %+v, want gross 17880 and net = gross + fees", usd)
		}
	})
	t.Run("CategoryTotals", func(t *testing.T) {
		c := rep.Summary.Categories[reconcile.NotForwarded]
		if c.Count != 2 || c.StoreAmount["USD"] != 7250 {
			t.Errorf("not_forwarded totals %+v, want 2 sales of 72.50 USD", c)
		}
		if d := rep.Summary.Categories[reconcile.DuplicateAtBank]; d.Count != 1 || d.BankAmount["USD"] != 5200 {
			t.Errorf("duplicate_at_bank totals %+v", d)
		}
	})
}

func TestCleanNightIsAllMatched(t *testing.T) {
	db, f, dir := loadFixture(t, "clean")
	res := run(t, db, "2026-11-21", f.sources(t, dir, "2026-11-21"))
	if res.Status != reconcile.Clean || res.Summary.Discrepancies != 0 || res.Summary.Categories[reconcile.Matched].Count != 7 {
		t.Fatalf("status %s, %d discrepancies, %d matched: want a clean night of 7 matched items", res.Status,
			res.Summary.Discrepancies, res.Summary.Categories[reconcile.Matched].Count)
	}
	b := res.Summary.Banks[1]
	if b.Gateway != "bank-b" || b.Currencies[0].Gross != 12990+2250-2990 {
		t.Errorf("bank-b totals %+v, want gross = captures - refund", b)
	}
}

// A date run twice gives the same report and leaves one run's rows; a
// manager's decision survives the re-run.
func TestReRunReplacesTheDatesResult(t *testing.T) {
	db, f, dir := loadFixture(t, "categories")
	ctx := context.Background()
	date := "2026-11-21"
	first := run(t, db, date, f.sources(t, dir, date))
	before := last(t, db, date)
	var decided int64
	for _, it := range before.Items {
		if it.Category == reconcile.DeclinedAfterForward {
			decided = it.Resolution.ID
		}
	}
	if err := reconcile.Decide(ctx, db, decided, true, "boss", "written off", time.Now()); err != nil {
		t.Fatal(err)
	}

	second := run(t, db, date, f.sources(t, dir, date))
	after := last(t, db, date)
	if second.RunID == first.RunID {
		t.Fatal("the re-run did not record a new run")
	}
	count := func(query string, args ...any) int {
		var n int
		if err := db.Read().QueryRow(query, args...).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(`SELECT count(*) FROM reconciliation_runs WHERE date = ?`, date); n != 1 {
		t.Errorf("%d runs kept for the date, want 1", n)
	}
	if n, want := count(`SELECT count(*) FROM reconciliation_items`), len(after.Items); n != want {
		t.Errorf("%d item rows, want %d (one run's)", n, want)
	}
	if n, want := count(`SELECT count(*) FROM reconciliation_proposals`), after.Summary.Discrepancies; n != want {
		t.Errorf("%d proposals, want %d (one per discrepancy)", n, want)
	}
	for i := range after.Items {
		a, b := after.Items[i], before.Items[i]
		if a.Category != b.Category || a.PaymentID != b.PaymentID || a.PSPReference != b.PSPReference ||
			a.StoreAmount != b.StoreAmount || a.BankAmount != b.BankAmount || a.Detail != b.Detail {
			t.Errorf("item %d changed on re-run:\n before %+v\n after  %+v", i, b, a)
		}
		if a.Resolution != nil && a.Resolution.ID != b.Resolution.ID {
			t.Errorf("proposal of item %d renumbered: %d, was %d", i, a.Resolution.ID, b.Resolution.ID)
		}
		if a.Resolution != nil && a.Resolution.ID == decided && (a.Resolution.Status != reconcile.Accepted || a.Resolution.DecidedBy != "boss") {
			t.Errorf("the manager's decision was lost on re-run: %+v", a.Resolution)
		}
	}
	if err := reconcile.Decide(ctx, db, decided, false, "boss", "", time.Now()); !errors.Is(err, reconcile.ErrDecided) {
		t.Errorf("deciding twice: %v, want ErrDecided", err)
	}
	if err := reconcile.Decide(ctx, db, 9999, true, "boss", "", time.Now()); !errors.Is(err, reconcile.ErrNotFound) {
		t.Errorf("deciding an unknown proposal: %v, want ErrNotFound", err)
	}
}

// A capture late in the evening settles in the next day's report: it is
// reported missing once, on its own night, and matched on the next,
// which withdraws the proposal to re-submit it. Nothing is missing twice.
func TestNeighbouringDays(t *testing.T) {
	db, f, dir := loadFixture(t, "neighbour")
	late, copied, afterMidnight, doubled := pay+"n001", pay+"n002", pay+"n003", pay+"n005"

	run(t, db, "2026-11-20", f.sources(t, dir, "2026-11-20"))
	night1 := last(t, db, "2026-11-20")
	missing := items(night1, reconcile.MissingAtBank, late)
	if len(missing) != 1 || missing[0].Resolution.Action != reconcile.ResubmitCapture {
		t.Fatalf("night 1: the late capture is not missing with a proposal to re-submit: %+v", night1.Items)
	}

	run(t, db, "2026-11-21", f.sources(t, dir, "2026-11-21"))
	night2 := last(t, db, "2026-11-21")
	t.Run("LateCaptureMatchedOnTheNextNight", func(t *testing.T) {
		m := items(night2, reconcile.Matched, late)
		if len(m) != 1 || m[0].StoreDate != "2026-11-20" || !strings.Contains(m[0].Detail, "a day late") {
			t.Fatalf("late capture on night 2: %+v", m)
		}
		if len(items(night2, reconcile.MissingAtBank, late)) != 0 {
			t.Error("reported missing on night 2 too")
		}
		again := items(last(t, db, "2026-11-20"), reconcile.MissingAtBank, late)
		if len(again) != 1 || again[0].Resolution.Status != reconcile.Withdrawn {
			t.Errorf("night 1's proposal to re-submit was not withdrawn: %+v", again)
		}
	})
	t.Run("RowCopiedIntoTheNextReportCountedOnce", func(t *testing.T) {
		if got := items(night2, reconcile.Matched, copied); len(got) != 0 {
			t.Errorf("a row night 1 settled was matched again on night 2: %+v", got)
		}
		if night2.Summary.ResentRows != 1 {
			t.Errorf("resent rows %d, want 1", night2.Summary.ResentRows)
		}
	})
	t.Run("SaleJustAfterMidnightBookedTheDayBefore", func(t *testing.T) {
		m := items(night2, reconcile.Matched, afterMidnight)
		if len(m) != 1 || m[0].StoreDate != "2026-11-22" {
			t.Errorf("after-midnight sale: %+v", m)
		}
	})
	t.Run("SecondChargeInTheNextReport", func(t *testing.T) {
		d := items(night2, reconcile.DuplicateAtBank, doubled)
		if len(d) != 1 || d[0].PSPReference != "auth_9Zz8Nb05x" || d[0].Resolution.Action != reconcile.ReverseDuplicateCharge {
			t.Errorf("second charge across reports: %+v", d)
		}
	})
	t.Run("ReRunOfTheFirstNightNoLongerMissesIt", func(t *testing.T) {
		run(t, db, "2026-11-20", f.sources(t, dir, "2026-11-20"))
		rerun := last(t, db, "2026-11-20")
		if rerun.Status != reconcile.Clean || rerun.Summary.SettledInNeighbourFile != 1 {
			t.Errorf("re-run of night 1: status %s, settled in neighbour file %d; want clean and 1", rerun.Status, rerun.Summary.SettledInNeighbourFile)
		}
	})
	t.Run("Nights", func(t *testing.T) {
		nights, err := reconcile.Nights(context.Background(), db, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(nights) != 2 || nights[0].Date != "2026-11-21" || nights[1].Date != "2026-11-20" || nights[0].Status != reconcile.Discrepancies {
			t.Errorf("nights %+v, want 2026-11-21 (discrepancies) then 2026-11-20", nights)
		}
	})
}

func TestMalformedRowsAreReportedAndTheRestReconciled(t *testing.T) {
	db, f, dir := loadFixture(t, "warts")
	res := run(t, db, "2026-11-21", f.sources(t, dir, "2026-11-21"))
	var lines []string
	for _, p := range res.Problems {
		lines = append(lines, p.Gateway+":"+strconv.Itoa(p.Line)+"-"+strconv.Itoa(p.EndLine))
	}
	if got, want := strings.Join(lines, " "), "bank-b:5-0 bank-b:6-0 bank-b:8-0 bank-b:12-0"; got != want {
		t.Errorf("problems %s, want %s", got, want)
	}
	s := res.Summary
	if s.Categories[reconcile.Matched].Count != 9 || s.ResentRows != 2 || s.OtherMerchantRows != 2 || s.MalformedRows != 4 {
		t.Errorf("summary %+v: want 9 matched (BOM, quotes, CRLF, other column order, unknown columns, after the bad rows and after the stray quote), 2 resent, 2 of other merchants, 4 malformed", s)
	}
	if res.Status != reconcile.Discrepancies {
		t.Error("unreadable rows must need a person")
	}
	// The captures on unreadable lines are missing, and say why they may be.
	for _, it := range res.Discrepancies() {
		if it.Category != reconcile.MissingAtBank || !strings.Contains(it.Detail, "could not be read") {
			t.Errorf("unexpected discrepancy %+v", it)
		}
	}
}

func TestAReportThatCannotBeReadStopsTheRun(t *testing.T) {
	db, f, dir := loadFixture(t, "clean")
	sources := f.sources(t, dir, "2026-11-21")
	sources[1] = reconcile.BytesSource("bank-b", "store-042", "garbage", []byte("<html>maintenance</html>\n"))
	_, err := reconcile.Reconcile(context.Background(), db, reconcile.Input{Date: "2026-11-21", Sources: sources})
	if !errors.Is(err, reconcile.ErrSource) || !strings.Contains(err.Error(), "bank-b") {
		t.Fatalf("err %v, want ErrSource naming bank-b", err)
	}
	if _, err := reconcile.Last(context.Background(), db, "2026-11-21"); !errors.Is(err, reconcile.ErrNotFound) {
		t.Errorf("Last after a failed run: %v, want ErrNotFound", err)
	}
}

// The summary the batch prints writes money as the console and the audit
// log do (orders.FormatMoney): thousands grouped, each currency in its own
// minor unit, the code after.
func TestSummaryWritesMoneyAsEverywhereElse(t *testing.T) {
	db, f, dir := loadFixture(t, "clean")
	tmp := withExtraRows(t, f, dir, "2026-11-21",
		"20261121-01,store-042,auth_big0001,pay_019aa6c1e5f07d2b8c1e4a7f3b2dffff,Settled,2026-11-21T21:40:00Z,USD,123456,-100,123356,4242,BG0001\n"+
			"20261121-01,store-042,auth_big0002,pay_019aa6c1e5f07d2b8c1e4a7f3b2dfffe,Settled,2026-11-21T21:41:00Z,JPY,270000,0,270000,4242,BG0002\n")
	res := run(t, db, "2026-11-21", f.sources(t, tmp, "2026-11-21"))
	var txt bytes.Buffer
	if err := res.WriteSummary(&txt); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"bank 270,000 JPY, 1,234.56 USD", "settled 1,234.56 USD under auth_big0001", "gross     1,322.00 USD", "gross      270,000 JPY"} {
		if !strings.Contains(txt.String(), want) {
			t.Errorf("the summary lacks %q:\n%s", want, txt.String())
		}
	}
}

// A large payments table is read in parallel parts; the report must not
// depend on how it was cut.
func TestLedgerReadInPartsGivesTheSameReport(t *testing.T) {
	reports := map[int]string{}
	for _, parts := range []int{1, 3, 7} {
		restore := reconcile.LoadInParts(parts)
		db, f, dir := loadFixture(t, "categories")
		res, err := reconcile.Reconcile(context.Background(), db, reconcile.Input{Date: "2026-11-21",
			Sources: f.sources(t, dir, "2026-11-21"), Now: clock("2026-11-21T02:30:00Z")})
		restore()
		if err != nil {
			t.Fatal(err)
		}
		reports[parts] = canonical(t, res.Report())
	}
	for _, parts := range []int{3, 7} {
		if reports[parts] != reports[1] {
			t.Errorf("read in %d parts, the report differs:\n%s", parts, diff(reports[1], reports[parts]))
		}
	}
}

// A Refunded row may name its payment instead of the refund: the format's
// merchant_reference is "storepay's payment id" and its psp_reference the
// bank's id "of the authorization or refund". It settles that payment's
// refund; a re-sent copy of it is a re-sent row, not a second refund.
func TestRefundRowNamingItsPayment(t *testing.T) {
	db, f, dir := loadFixture(t, "clean")
	alt := withReports(t, f, dir, "2026-11-21", func(gw string, b []byte) []byte {
		if gw != "bank-b" {
			return b
		}
		refund := "1121A,store-042,rfd_Pq7Lz3Cl,rfd_019aa7d04c2e7a61b93f0d5e8c14c001,Refunded"
		byPayment := "1121A,store-042,auth_Lm2Qv8Cl02,pay_019aa6c1e5f07d2b8c1e4a7f3b2dd002,Refunded"
		if !strings.Contains(string(b), refund) {
			t.Fatal("the clean fixture changed: its refund row is not there")
		}
		s := strings.Replace(string(b), refund, byPayment, 1)
		s += strings.SplitAfter(s, "\n")[3] // the refund row, re-sent
		return []byte(s)
	})
	res := run(t, db, "2026-11-21", f.sources(t, alt, "2026-11-21"))
	if res.Status != reconcile.Clean || res.Summary.Categories[reconcile.Matched].Count != 7 || res.Summary.ResentRows != 1 {
		t.Fatalf("status %s, %d matched, %d re-sent, %d discrepancies: want clean, 7 matched, 1 re-sent", res.Status,
			res.Summary.Categories[reconcile.Matched].Count, res.Summary.ResentRows, res.Summary.Discrepancies)
	}
}

// withReports copies a fixture night's reports to a temporary folder,
// each through edit (given the gateway and the report's bytes).
func withReports(t *testing.T, f fixture, dir, date string, edit func(gw string, b []byte) []byte) string {
	t.Helper()
	tmp := t.TempDir()
	if err := os.MkdirAll(filepath.Join(tmp, date), 0o755); err != nil {
		t.Fatal(err)
	}
	for gw := range f.Banks {
		b, err := os.ReadFile(filepath.Join(dir, date, gw+".csv"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(tmp, date, gw+".csv"), edit(gw, b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return tmp
}

// replaceRow is a report edit that puts row in place of every line
// containing marker.
func replaceRow(marker, row string) func(string, []byte) []byte {
	return func(_ string, b []byte) []byte {
		lines := strings.SplitAfter(string(b), "\n")
		for i, l := range lines {
			if strings.Contains(l, marker) {
				lines[i] = row
			}
		}
		return []byte(strings.Join(lines, ""))
	}
}

// withExtraRows copies a fixture night's reports, adding rows to bank-a's.
func withExtraRows(t *testing.T, f fixture, dir, date, rows string) string {
	t.Helper()
	return withReports(t, f, dir, date, func(gw string, b []byte) []byte {
		if gw == "bank-a" {
			b = append(b, rows...)
		}
		return b
	})
}

// The same authorization settled again in another batch is not a re-sent
// copy of its row: the card holder paid twice, and a person must see it.
func TestSameAuthorizationSettledInAnotherBatchIsADuplicate(t *testing.T) {
	db, f, dir := loadFixture(t, "clean")
	tmp := withExtraRows(t, f, dir, "2026-11-21",
		"20261121-02,store-042,auth_7Gx2mQCl00,pay_019aa6c1e5f07d2b8c1e4a7f3b2dd000,Settled,2026-11-21T21:40:00Z,USD,1450,-72,1378,4242,CL0000\n")
	res := run(t, db, "2026-11-21", f.sources(t, tmp, "2026-11-21"))
	rep := res.Report()
	dups := items(rep, reconcile.DuplicateAtBank, "pay_019aa6c1e5f07d2b8c1e4a7f3b2dd000")
	if len(dups) != 1 || res.Summary.ResentRows != 0 || res.Status == reconcile.Clean {
		t.Fatalf("status %s, %d resent, duplicates %+v: want the second settlement reported as duplicate_at_bank", res.Status, res.Summary.ResentRows, dups)
	}
}

// A record the first night settled comes again in the next night's
// report: the very row (its batch re-sent) is counted once; the same
// authorization in the next night's own batch, or for another amount, is
// money taken a second time.
func TestSettledAgainOnTheNextNight(t *testing.T) {
	const copied = pay + "n002"
	for _, tc := range []struct {
		name, row string
		dup       bool
	}{
		{"TheSameRowResent", "20261120-01,store-042,auth_7Gx2mQNb02," + copied + ",Settled,2026-11-20T14:02:17Z,USD,640,-49,591,4242,NB0002", false},
		{"InTheNextNightsBatch", "20261121-01,store-042,auth_7Gx2mQNb02," + copied + ",Settled,2026-11-21T14:02:17Z,USD,640,-49,591,4242,NB0002", true},
		{"ForAnotherAmount", "20261120-01,store-042,auth_7Gx2mQNb02," + copied + ",Settled,2026-11-20T14:02:17Z,USD,600,-49,551,4242,NB0002", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, f, dir := loadFixture(t, "neighbour")
			run(t, db, "2026-11-20", f.sources(t, dir, "2026-11-20"))
			next := withReports(t, f, dir, "2026-11-21", replaceRow(copied, tc.row+"\n"))
			res := run(t, db, "2026-11-21", f.sources(t, next, "2026-11-21"))
			dups := items(res.Report(), reconcile.DuplicateAtBank, copied)
			if tc.dup && (len(dups) != 1 || res.Summary.ResentRows != 0) || !tc.dup && (len(dups) != 0 || res.Summary.ResentRows != 1) {
				t.Fatalf("%d duplicates, %d resent rows; want a duplicate: %v", len(dups), res.Summary.ResentRows, tc.dup)
			}
		})
	}
}

// A chargeback named only by the bank's id of the authorization is
// reported against the store's payment of that authorization.
func TestChargebackNamedByTheAuthorizationNamesItsPayment(t *testing.T) {
	db, f, dir := loadFixture(t, "categories")
	tmp := withExtraRows(t, f, dir, "2026-11-21",
		"20261121-01,store-042,auth_7Gx2mQ1a9KpL,,Chargeback,2026-11-21T21:40:00Z,USD,-1450,-1500,-2950,,\n")
	rep := run(t, db, "2026-11-21", f.sources(t, tmp, "2026-11-21")).Report()
	var got []reconcile.Item
	for _, it := range items(rep, reconcile.MissingInStore, pay+"a001") {
		if it.Kind == "chargeback" {
			got = append(got, it)
		}
	}
	if len(got) != 1 || got[0].BankAmount != -1450 || !strings.Contains(got[0].Detail, pay+"a001") {
		t.Fatalf("chargeback items for the payment: %+v", got)
	}
}

// A bank that settled a sale the store holds as declined after forward
// (or still queued) has one item for it, the settlement the store has no
// record of; none saying no bank has it (or proposing to forward it).
func TestSaleTheBankSettledAfterAllIsOneItem(t *testing.T) {
	db, f, dir := loadFixture(t, "categories")
	alt := withReports(t, f, dir, "2026-11-21", func(gw string, b []byte) []byte {
		if gw == "bank-b" {
			b = append(b, "1121A,store-042,auth_Dc4Nb004,"+pay+"b004,Settled,2026-11-21T21:40:00Z,USD,1299,0,1299,0002,OK1\n"...)
			b = append(b, "1121A,store-042,auth_Qd2Nb002,"+pay+"b002,Settled,2026-11-21T21:41:00Z,USD,850,0,850,0002,OK2\n"...)
		}
		return b
	})
	rep := run(t, db, "2026-11-21", f.sources(t, alt, "2026-11-21")).Report()
	for _, p := range []string{pay + "b004", pay + "b002"} {
		var cats []reconcile.Category
		for _, it := range rep.Items {
			if it.PaymentID == p {
				cats = append(cats, it.Category)
			}
		}
		if len(cats) != 1 || cats[0] != reconcile.MissingInStore {
			t.Errorf("%s: items %v, want one missing_in_store", p, cats)
		}
	}
}

// A refund the store has no record of, whose reference names one of the
// store's payments, is reported against that payment.
func TestUnknownRefundNamingAPaymentNamesIt(t *testing.T) {
	db, f, dir := loadFixture(t, "clean")
	tmp := withExtraRows(t, f, dir, "2026-11-21",
		"20261121-01,store-042,rfd_bankonly1,pay_019aa6c1e5f07d2b8c1e4a7f3b2dd000,Refunded,2026-11-21T21:40:00Z,USD,-1450,0,-1450,4242,\n")
	rep := run(t, db, "2026-11-21", f.sources(t, tmp, "2026-11-21")).Report()
	got := items(rep, reconcile.MissingInStore, "pay_019aa6c1e5f07d2b8c1e4a7f3b2dd000")
	if len(got) != 1 || got[0].PSPReference != "rfd_bankonly1" {
		t.Fatalf("missing_in_store items for the payment: %+v; want the bank's refund, with its payment id", got)
	}
}

// A Refunded row naming a payment under a refund id of its own does not
// take over a refund the bank confirmed under another id: that one is
// still matched by its own row, and this one is a refund the store has no
// record of (it was never reported as a second refund of the other).
func TestRefundRowDoesNotTakeAnotherConfirmedRefund(t *testing.T) {
	db, f, dir := loadFixture(t, "clean")
	alt := withReports(t, f, dir, "2026-11-21", func(gw string, b []byte) []byte {
		if gw != "bank-b" {
			return b
		}
		confirmed := "1121A,store-042,rfd_Pq7Lz3Cl,"
		other := "1121A,store-042,rfd_bankother,pay_019aa6c1e5f07d2b8c1e4a7f3b2dd002,Refunded,2026-11-21T17:00:00Z,USD,-300,0,-300,4242,\n"
		if !strings.Contains(string(b), confirmed) {
			t.Fatal("the clean fixture changed: its refund row is not there")
		}
		return []byte(strings.Replace(string(b), confirmed, other+confirmed, 1))
	})
	res := run(t, db, "2026-11-21", f.sources(t, alt, "2026-11-21"))
	rep := res.Report()
	const p = "pay_019aa6c1e5f07d2b8c1e4a7f3b2dd002"
	missing := items(rep, reconcile.MissingInStore, p)
	if res.Summary.Categories[reconcile.Matched].Count != 7 || len(missing) != 1 || missing[0].PSPReference != "rfd_bankother" ||
		len(items(rep, reconcile.DuplicateAtBank, p)) != 0 {
		t.Fatalf("%d matched, missing in store %+v, duplicates %+v: want 7 matched and rfd_bankother missing in store",
			res.Summary.Categories[reconcile.Matched].Count, missing, items(rep, reconcile.DuplicateAtBank, p))
	}
}

// A refund row under an id the store does not know, naming the payment
// (as a report written from the format alone does: its
// merchant_reference is "storepay's payment id"), settles the refund of
// that payment and amount that no other row settled.
func TestRefundRowUnderAnotherIDSettlesTheLeftoverRefund(t *testing.T) {
	db, f, dir := loadFixture(t, "clean")
	const p = "pay_019aa6c1e5f07d2b8c1e4a7f3b2dd002"
	for _, tc := range []struct {
		name, row string
		clean     bool
	}{
		{"SameAmount", "1121A,store-042,rfd_bankown1," + p + ",Refunded,2026-11-21T18:00:01Z,USD,-2990,0,-2990,4242,\n", true},
		{"AnotherAmount", "1121A,store-042,rfd_bankown1," + p + ",Refunded,2026-11-21T18:00:01Z,USD,-2900,0,-2900,4242,\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			alt := withReports(t, f, dir, "2026-11-21", replaceRow("rfd_Pq7Lz3Cl,", tc.row))
			res := run(t, db, "2026-11-21", f.sources(t, alt, "2026-11-21"))
			if clean := res.Status == reconcile.Clean; clean != tc.clean {
				t.Fatalf("status %s with items %+v; want clean: %v", res.Status, res.Report().Items, tc.clean)
			}
		})
	}
}

// A bank's report that carries card numbers where references, types or
// amounts belong: no full card number reaches the report or the database.
func TestCardNumbersInAReportAreMasked(t *testing.T) {
	db, f, dir := loadFixture(t, "clean")
	tmp := withExtraRows(t, f, dir, "2026-11-21",
		"20261121-01,store-042,auth_X1,4242 4242 4242 4242,Settled,2026-11-21T21:40:00Z,USD,700,0,700,4242,A1\n"+
			"20261121-01,store-042,auth_X2,pay_x,4000000000000002,2026-11-21T21:40:00Z,USD,700,0,700,4242,A1\n"+
			"20261121-01,store-042,auth_X3,pay_y,Settled,2026-11-21T21:40:00Z,USD,5555555555554444,0,700,4242,A1\n")
	res := run(t, db, "2026-11-21", f.sources(t, tmp, "2026-11-21"))
	var js bytes.Buffer
	if err := res.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	stored, err := json.Marshal(last(t, db, "2026-11-21"))
	if err != nil {
		t.Fatal(err)
	}
	for _, pan := range []string{"4242 4242 4242 4242", "4242424242424242", "4000000000000002", "5555555555554444"} {
		if strings.Contains(js.String(), pan) || strings.Contains(string(stored), pan) {
			t.Errorf("the report carries the card number %s", pan)
		}
	}
	if !strings.Contains(js.String(), "424242******4242") {
		t.Errorf("the masked reference is missing from the report: %s", js.String())
	}
}
