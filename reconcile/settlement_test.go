package reconcile_test

import (
	"errors"
	"io"
	"strings"
	"testing"

	"storepay/reconcile"
)

const header = "batch_number,merchant_id,psp_reference,merchant_reference,type,booking_date,currency,gross_amount,fee_amount,net_amount,card_last4,auth_code"

// readAll reads a report and returns its rows and its unreadable rows.
func readAll(t *testing.T, report string) ([]reconcile.Row, []*reconcile.RowError) {
	t.Helper()
	sr, err := reconcile.NewSettlementReader(strings.NewReader(report))
	if err != nil {
		t.Fatalf("header: %v", err)
	}
	var rows []reconcile.Row
	var bad []*reconcile.RowError
	for {
		r, err := sr.Next()
		if errors.Is(err, io.EOF) {
			return rows, bad
		}
		var re *reconcile.RowError
		if errors.As(err, &re) {
			bad = append(bad, re)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, r)
	}
}

func TestSettlementReaderSurvivesRealFiles(t *testing.T) {
	tests := []struct {
		name     string
		report   string
		refs     []string // merchant_reference of each row read
		badLines []int    // lines reported unreadable
	}{
		{
			name:   "ByteOrderMarkAndCRLF",
			report: "\ufeff" + header + "\r\n20261121-01,store-042,auth_1,pay_1,Settled,2026-11-21T10:00:00Z,USD,1450,-72,1378,4242,A1B2C3\r\n",
			refs:   []string{"pay_1"},
		},
		{
			name: "QuotedFieldsWithCommasAndQuotes",
			report: header + "\n" + `"20261121-01","store-042","auth_1","pay_1","Settled","2026-11-21T10:00:00Z","USD","1450","-72","1378","4242","A1""B2"` + "\n" +
				`20261121-01,"store-042","auth_2","pay,2",Settled,2026-11-21T10:00:00Z,USD,10,0,10,,` + "\n",
			refs: []string{"pay_1", "pay,2"},
		},
		{
			name: "ColumnsInAnotherOrderAndUnknownColumns",
			report: "Type , Merchant_Reference,gross_amount,psp_reference,currency,merchant_id,terminal_ref,settlement_currency\n" +
				"Settled,pay_1,1450,auth_1,USD,store-042,T01,USD\n",
			refs: []string{"pay_1"},
		},
		{
			name:   "TrailingEmptyAndBlankLines",
			report: header + "\n20261121-01,store-042,auth_1,pay_1,Settled,,USD,1,0,1,,\n\n,,,,,,,,,,,\n\r\n\n",
			refs:   []string{"pay_1"},
		},
		{
			name: "HeaderRepeatedByAConcatenatedBatch",
			report: header + "\n20261121-01,store-042,auth_1,pay_1,Settled,,USD,1,0,1,,\n" +
				header + "\n20261121-01,store-042,auth_1,pay_1,Settled,,USD,1,0,1,,\n",
			refs: []string{"pay_1", "pay_1"},
		},
		{
			name:   "FeeRowWithoutReference",
			report: header + "\n20261121-01,store-042,fee_1,,Fee,,USD,0,-500,-500,,\n",
			refs:   []string{""},
		},
		{
			name: "MalformedRowsAreReportedAndTheRestIsRead",
			report: header + "\n" +
				"b,store-042,auth_1,pay_1,Settled,,USD,14.50,0,14.50,,\n" + // line 2: decimal amount
				"b,store-042,auth_2,pay_2,Adjustment,,USD,1,0,1,,\n" + // line 3: unknown type
				"b,store-042,auth_3,pay_3,Settled\n" + // line 4: short
				"b,store-042,auth_4,pay_4,Settled,,usd,1,0,1,,\n" + // line 5: bad currency
				"b,store-042,,pay_5,Settled,,USD,1,0,1,,\n" + // line 6: no psp_reference: matched by merchant_reference
				"b,store-042,auth_6,,Settled,,USD,1,0,1,,\n" + // line 7: no merchant_reference: matched by psp_reference
				"b,store-042,auth_7,pay_7,Settled,,USD,1,0,1,4242424242424242,\n" + // line 8: a full card number
				"b,store-042,auth_8,pay_8,Settled,,USD,1,0,1,,\n" + // line 9: fine
				"b,store-042,,,Settled,,USD,1,0,1,,\n" + // line 10: no reference at all
				"b,store-042,auth_11,pay_11,Settled,,USD,14,50,0,1450,,\n" + // line 11: an unquoted "14,50": one field too many
				"b,store-042,auth_12,pay_12,Settled,,USD,100,-3,99,,\n" + // line 12: net is not gross + fee
				"b,store-042,auth_13,pay_13,Settled,yesterday,USD,1,0,1,,\n", // line 13: booking_date is not a time
			refs:     []string{"pay_5", "", "pay_8"},
			badLines: []int{2, 3, 4, 5, 8, 10, 11, 12, 13},
		},
		{
			name: "BrokenQuoteCostsOnlyItsOwnLine",
			report: header + "\n" +
				`b,store-042,auth_1,"pay_1,Settled,,USD,1,0,1,,` + "\n" + // line 2: the quote never closes...
				`b,store-042,auth_2,pay_2,Settled,,USD,1,0,1,,"A2"` + "\n" + // line 3: ...and would pair with these
				"b,store-042,auth_3,pay_3,Settled,,USD,1,0,1,,\n",
			refs:     []string{"pay_2", "pay_3"},
			badLines: []int{2},
		},
		{
			name: "QuotedFieldSpanningLines",
			report: header + "\n" +
				"b,store-042,auth_1,pay_1,Settled,,USD,1,0,1,,\"A\n1\"\n" + // lines 2-3: one row
				"b,store-042,auth_2,pay_2,Settled,,USD,1,0,1,,\n",
			refs: []string{"pay_1", "pay_2"},
		},
		{
			name: "BookingDatesAsBanksWriteThem",
			report: header + "\n" +
				"b,store-042,auth_1,pay_1,Settled,2026-11-21T22:00:05Z,USD,1,0,1,,\n" +
				"b,store-042,auth_2,pay_2,Settled,2026-11-21T22:00:05.123+01:00,USD,1,0,1,,\n" +
				"b,store-042,auth_3,pay_3,Settled,2026-11-21 22:00:05,USD,1,0,1,,\n" +
				"b,store-042,auth_4,pay_4,Settled,2026-11-21t22:00:05z,USD,1,0,1,,\n" +
				"b,store-042,auth_5,pay_5,Settled,2026-11-21,USD,1,0,1,,\n" +
				"b,store-042,auth_6,pay_6,Settled,21/11/2026,USD,1,0,1,,\n", // line 7: not a time anyone can read
			refs:     []string{"pay_1", "pay_2", "pay_3", "pay_4", "pay_5"},
			badLines: []int{7},
		},
		{
			name: "SignsAsTheFormatSays",
			report: header + "\n" +
				"b,store-042,auth_1,pay_1,Settled,,USD,100,-3,97,,\n" +
				"b,store-042,rfd_1,pay_1,Refunded,,USD,-50,0,-50,,\n" +
				"b,store-042,cb_1,pay_1,Chargeback,,USD,-50,-15,-65,,\n" +
				"b,store-042,auth_2,pay_2,Settled,,USD,-100,0,-100,,\n" + // line 5: a capture is money to the merchant
				"b,store-042,rfd_2,pay_2,Refunded,,USD,50,0,50,,\n" + // line 6: a refund is money back
				"b,store-042,cb_2,pay_2,Chargeback,,USD,50,0,50,,\n", // line 7: so is a chargeback
			refs:     []string{"pay_1", "pay_1", "pay_1"},
			badLines: []int{5, 6, 7},
		},
		{
			name: "FeeWithoutReferencesOrGross",
			report: header + "\n" +
				"b,store-042,,,Fee,2026-11-21T23:59:59Z,USD,,-500,-500,,\n" +
				"b,store-042,,,Fee,2026-11-21T23:59:59Z,USD,,-900,-900,,\n",
			refs: []string{"", ""},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rows, bad := readAll(t, tt.report)
			var refs []string
			for _, r := range rows {
				refs = append(refs, r.MerchantReference)
			}
			if strings.Join(refs, "|") != strings.Join(tt.refs, "|") {
				t.Errorf("rows %q, want %q", refs, tt.refs)
			}
			var lines []int
			for _, b := range bad {
				lines = append(lines, b.Line)
			}
			if len(lines) != len(tt.badLines) {
				t.Fatalf("unreadable lines %v, want %v (%v)", lines, tt.badLines, bad)
			}
			for i := range lines {
				if lines[i] != tt.badLines[i] {
					t.Errorf("unreadable lines %v, want %v", lines, tt.badLines)
				}
			}
		})
	}
}

func TestSettlementReaderRowFields(t *testing.T) {
	rows, _ := readAll(t, header+"\n20261121-01,store-042,rfd_9,ref_1,refunded,2026-11-21T18:00:01Z,USD,-500,,,4242,\n")
	if len(rows) != 1 {
		t.Fatalf("%d rows", len(rows))
	}
	r := rows[0]
	if r.Line != 2 || r.Type != reconcile.Refunded || r.Gross != -500 || r.Fee != 0 || r.Net != -500 ||
		r.PSPReference != "rfd_9" || r.MerchantID != "store-042" || r.CardLast4 != "4242" {
		t.Errorf("row %+v: want line 2, a Refunded of -500 with fee 0 and net = gross + fee", r)
	}
}

// A stray quote is reported on its own line, and the lines it would have
// swallowed are read as rows of their own.
func TestAStrayQuoteIsReportedOnItsLine(t *testing.T) {
	rows, bad := readAll(t, header+"\n"+`b,store-042,auth_1,"pay_1,Settled,,USD,1,0,1,,`+"\nb,x\n"+`b,store-042,auth_2,pay_2,Settled,,USD,1,0,1,,"A2"`+"\n")
	if len(bad) != 2 || bad[0].Line != 2 || bad[1].Line != 3 {
		t.Fatalf("got %v, want errors on lines 2 (the stray quote) and 3 (short)", bad)
	}
	if got := bad[0].Error(); !strings.HasPrefix(got, "line 2: ") {
		t.Errorf("error %q does not name its line", got)
	}
	if len(rows) != 1 || rows[0].MerchantReference != "pay_2" || rows[0].Line != 4 {
		t.Errorf("rows %+v, want pay_2 on line 4", rows)
	}
}

func TestSettlementReaderRefusesWhatCannotBeReconciled(t *testing.T) {
	for name, report := range map[string]string{
		"Empty":              "",
		"OnlyBlankLines":     "\n\n\r\n",
		"NoMerchantRefCol":   "batch_number,merchant_id,psp_reference,type,currency,gross_amount\n",
		"NotASettlementFile": "id,amount\n1,2\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := reconcile.NewSettlementReader(strings.NewReader(report)); err == nil {
				t.Fatal("read a report reconciliation cannot use")
			}
		})
	}
}
