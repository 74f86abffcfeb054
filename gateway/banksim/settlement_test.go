package banksim_test

import (
	"bytes"
	"encoding/csv"
	"net/http"
	"strings"
	"testing"
	"time"

	"storepay/gateway/banksim"
)

// settlementRows fetches a report and returns its rows by column name.
func settlementRows(t *testing.T, b *bank, day string) []map[string]string {
	t.Helper()
	r := b.get("/v1/settlements/" + day)
	wantStatus(t, r, http.StatusOK)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
		t.Errorf("Content-Type = %q, want text/csv", ct)
	}
	if bytes.Contains(r.body, []byte(goodPAN)) {
		t.Error("the report holds a full card number")
	}
	records, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil {
		t.Fatalf("report is not RFC 4180 CSV: %v\n%s", err, r.body)
	}
	header := records[0]
	want := "batch_number,merchant_id,psp_reference,merchant_reference,type,booking_date,currency,gross_amount,fee_amount,net_amount,card_last4,auth_code"
	if got := strings.Join(header, ","); got != want {
		t.Errorf("header = %s, want %s", got, want)
	}
	var rows []map[string]string
	for _, rec := range records[1:] {
		row := map[string]string{}
		for i, name := range header {
			row[name] = rec[i]
		}
		rows = append(rows, row)
	}
	return rows
}

func TestSettlement(t *testing.T) {
	clk := newClock(day0)
	sim, b := start(t, banksim.Config{Now: clk.Now})

	sale := b.authorize("pay_a", 1450, true)
	pre := b.authorize("pay_b", 1000, false)
	b.post("/v1/authorizations/"+pre.ID+"/captures", "cap-b", map[string]any{"amount": 1200})
	reversed := b.authorize("pay_c", 999, true)
	b.post("/v1/authorizations/"+reversed.ID+"/reversals", "rev-c", nil)
	b.post("/v1/authorizations", "k-d", authBody("pay_d", "4000000000000002", 500, true))
	b.authorize("pay_e", 300, false) // never captured
	clk.Set(day0.Add(time.Minute))
	rfd := b.post("/v1/refunds", "rfd-a", map[string]any{"authorization_id": sale.ID, "amount": 500, "reference": "ref_a"})
	var refund struct{ ID string }
	rfd.decode(t, &refund)

	t.Run("OpenDayNotFound", func(t *testing.T) {
		wantError(t, b.get("/v1/settlements/2026-11-21"), http.StatusNotFound, "not_closed")
		wantError(t, b.get("/v1/settlements/2026-12-01"), http.StatusNotFound, "not_closed")
	})
	t.Run("MalformedDate", func(t *testing.T) {
		wantError(t, b.get("/v1/settlements/21-11-2026"), http.StatusBadRequest, "invalid_request")
	})
	t.Run("ClosedByTheClock", func(t *testing.T) {
		clk.Set(day0.Add(24 * time.Hour))
		defer clk.Set(day0.Add(time.Minute))
		rows := settlementRows(t, b, "2026-11-21")
		want := []map[string]string{
			{"batch_number": "20261121-01", "merchant_id": "store-042", "psp_reference": sale.ID, "merchant_reference": "pay_a", "type": "Settled",
				"booking_date": "2026-11-21T10:15:00Z", "currency": "USD", "gross_amount": "1450", "fee_amount": "-72", "net_amount": "1378",
				"card_last4": "4242", "auth_code": sale.AuthCode},
			{"batch_number": "20261121-01", "merchant_id": "store-042", "psp_reference": pre.ID, "merchant_reference": "pay_b", "type": "Settled",
				"booking_date": "2026-11-21T10:15:00Z", "currency": "USD", "gross_amount": "1200", "fee_amount": "-65", "net_amount": "1135",
				"card_last4": "4242", "auth_code": pre.AuthCode},
			{"batch_number": "20261121-01", "merchant_id": "store-042", "psp_reference": refund.ID, "merchant_reference": "ref_a", "type": "Refunded",
				"booking_date": "2026-11-21T10:16:00Z", "currency": "USD", "gross_amount": "-500", "fee_amount": "0", "net_amount": "-500",
				"card_last4": "4242", "auth_code": ""},
		}
		// The two captures share a booking time: they come in psp_reference order.
		if sale.ID > pre.ID {
			want[0], want[1] = want[1], want[0]
		}
		if len(rows) != len(want) {
			t.Fatalf("rows = %v, want %v", rows, want)
		}
		for i := range want {
			for col, v := range want[i] {
				if rows[i][col] != v {
					t.Errorf("row %d %s = %q, want %q", i, col, rows[i][col], v)
				}
			}
		}
		if rows := settlementRows(t, b, "2026-11-20"); len(rows) != 0 {
			t.Errorf("a day without bookings has rows %v", rows)
		}
	})
	t.Run("ClosedThroughAdmin", func(t *testing.T) {
		admin := adminClient(t, sim)
		admin.post("/admin/close?date=2026-11-21", "", nil)
		if rows := settlementRows(t, b, "2026-11-21"); len(rows) != 3 {
			t.Errorf("rows = %d, want 3", len(rows))
		}
		// Bookings after the close go into the next business date.
		late := b.authorize("pay_after_close", 100, true)
		clk.Set(day0.Add(48 * time.Hour))
		rows := settlementRows(t, b, "2026-11-22")
		if len(rows) != 1 || rows[0]["psp_reference"] != late.ID || rows[0]["batch_number"] != "20261122-01" {
			t.Errorf("next day's rows = %v", rows)
		}
	})
	t.Run("ExtraRowsAppended", func(t *testing.T) {
		dup := "20261121-01,store-042," + sale.ID + ",pay_a,Settled,2026-11-21T10:15:00Z,USD,1450,-72,1378,4242," + sale.AuthCode
		other := "20261121-01,store-777,auth_x,pay_x,Settled,2026-11-21T11:00:00Z,USD,100,-33,67,1111,ZZZ999"
		admin := adminClient(t, sim)
		r := admin.post("/admin/settlement-rows?date=2026-11-21", "", dup+"\n"+other)
		wantStatus(t, r, http.StatusOK)
		rows := settlementRows(t, b, "2026-11-21")
		if len(rows) != 5 || rows[3]["psp_reference"] != sale.ID || rows[4]["merchant_id"] != "store-777" {
			t.Errorf("rows with extras = %v", rows)
		}
	})
}

func TestSettlementLateCutoff(t *testing.T) {
	clk := newClock(time.Date(2026, 11, 21, 22, 30, 0, 0, time.UTC))
	sim, b := start(t, banksim.Config{Now: clk.Now, LateCutoff: 22 * time.Hour})
	late := b.authorize("pay_late", 100, true)
	if a, _ := sim.Ledger().Find(late.ID); a.BusinessDate != "2026-11-22" {
		t.Errorf("business date = %q, want 2026-11-22", a.BusinessDate)
	}
	clk.Set(time.Date(2026, 11, 23, 1, 0, 0, 0, time.UTC))
	if rows := settlementRows(t, b, "2026-11-21"); len(rows) != 0 {
		t.Errorf("21st has %v", rows)
	}
	if rows := settlementRows(t, b, "2026-11-22"); len(rows) != 1 || rows[0]["booking_date"] != "2026-11-21T22:30:00Z" {
		t.Errorf("22nd has %v", rows)
	}
}

func TestSettlementDailyFeeAndAccounts(t *testing.T) {
	clk := newClock(day0)
	_, b := start(t, banksim.Config{Now: clk.Now, DailyFee: 150, MoreAPIKeys: []string{"sk_other"}})
	b.authorize("pay_fee", 1000, true)
	other := newBank(t, b.url)
	other.key = "sk_other"
	other.authorize("pay_other_account", 5000, true)

	clk.Set(day0.Add(24 * time.Hour))
	rows := settlementRows(t, b, "2026-11-21")
	if len(rows) != 2 || rows[0]["merchant_reference"] != "pay_fee" {
		t.Fatalf("rows = %v", rows)
	}
	fee := rows[1]
	if fee["type"] != "Fee" || fee["merchant_reference"] != "" || fee["fee_amount"] != "-150" || fee["net_amount"] != "-150" || fee["auth_code"] != "" {
		t.Errorf("fee row = %v", fee)
	}
}
