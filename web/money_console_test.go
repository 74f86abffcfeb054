package web_test

import (
	"context"
	"database/sql"
	"net/http"
	"strings"
	"testing"
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
