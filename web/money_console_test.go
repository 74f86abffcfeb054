package web_test

import (
	"context"
	"database/sql"
	"net/http"
	"strings"
	"testing"

	"storepay/devices"
)

// The queue's total is told per currency, in each currency's own minor
// unit, and counts only what is still to forward.
func TestQueueTotalIsPerCurrencyAndLeavesForwardedOut(t *testing.T) {
	e := newConsole(t, false)
	fillQueue(t, e.db, 4) // 4 × 5.00 USD, queued
	err := e.db.Update(context.Background(), func(tx *sql.Tx) error {
		if _, err := tx.Exec(`UPDATE saf_records SET status = 'forwarded' WHERE id = 'saf_00000'`); err != nil {
			return err
		}
		_, err := tx.Exec(`UPDATE saf_records SET currency = 'JPY', amount = 2700 WHERE id = 'saf_00001'`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	s := e.login(e.manager)
	a := e.get("/console/saf", s)
	wantStatus(t, a, http.StatusOK)
	if !strings.Contains(a.body, "(2,700 JPY, 10.00 USD still to forward") {
		t.Fatalf("the queue's total: %s", a.body)
	}
	a = e.get("/console/saf?status=forwarded", s)
	if !strings.Contains(a.body, "(5.00 USD in all, status forwarded") {
		t.Fatalf("the forwarded records' total: %s", a.body)
	}
}

// The dashboard tells what the queue still owes per currency, leaving
// forwarded records out, and its limits in the currency the store
// configured them in; without one, as numbers of minor units, never with
// a guessed decimal point. A manager's action on a record is audited with
// its amount written the same way.
func TestDashboardMoneyIsPerCurrency(t *testing.T) {
	e := newConsole(t, false)
	fillQueue(t, e.db, 4) // 4 × 5.00 USD, queued
	err := e.db.Update(context.Background(), func(tx *sql.Tx) error {
		if _, err := tx.Exec(`UPDATE saf_records SET status = 'forwarded' WHERE id = 'saf_00000'`); err != nil {
			return err
		}
		_, err := tx.Exec(`UPDATE saf_records SET currency = 'JPY', amount = 2700 WHERE id = 'saf_00001'`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	s := e.login(e.manager)
	a := e.get("/console", s)
	wantStatus(t, a, http.StatusOK)
	for _, want := range []string{`id="outstanding">2,700 JPY, 10.00 USD</p>`, "of the total limit 500,000 minor units",
		"Floor limit per payment: 10,000 minor units"} {
		if !strings.Contains(a.body, want) {
			t.Errorf("the dashboard without a limit currency lacks %q:\n%s", want, a.body)
		}
	}

	e.queue.Rules.Currency = "USD" // offline.currency in the config
	a = e.get("/console", s)
	for _, want := range []string{`id="outstanding">2,700 JPY, 10.00 USD</p>`, "of the total limit 5,000.00 USD",
		"Floor limit per payment: 100.00 USD"} {
		if !strings.Contains(a.body, want) {
			t.Errorf("the dashboard with limits in USD lacks %q:\n%s", want, a.body)
		}
	}

	if _, err := e.queue.Hold(context.Background(), "saf_00001", "boss", "customer called"); err != nil {
		t.Fatal(err)
	}
	got, err := devices.AuditLog(context.Background(), e.db, devices.AuditFilter{Action: "saf.hold"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Detail != "payment pay_00001, 2,700 JPY, queued → held" {
		t.Fatalf("the hold's audit entry: %+v; want its amount as 2,700 JPY", got)
	}
}
