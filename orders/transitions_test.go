package orders

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"storepay/migrations"
)

// The state machine allows exactly the transitions of the contract's
// payment life, and save refuses anything else without writing.
func TestPaymentTransitions(t *testing.T) {
	all := []Status{Pending, Authorized, Captured, Declined, Stored, Voided, Refunded, PartiallyRefunded, DeclinedAfterForward}
	want := map[string]bool{
		"pending→authorized": true, "pending→captured": true, "pending→declined": true, "pending→stored": true,
		"authorized→captured": true, "authorized→voided": true,
		"captured→voided": true, "captured→partially_refunded": true, "captured→refunded": true,
		"partially_refunded→partially_refunded": true, "partially_refunded→refunded": true,
		"stored→authorized": true, "stored→captured": true, "stored→declined_after_forward": true, "stored→voided": true,
	}
	for _, from := range all {
		for _, to := range all {
			k := string(from) + "→" + string(to)
			if got := allowed(from, to); got != want[k] {
				t.Errorf("allowed(%s) = %v, want %v", k, got, want[k])
			}
		}
	}

	db, err := migrations.Open(context.Background(), filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Now()
	p := Payment{ID: "pay_1", OrderID: "ord_1", Method: Card, Status: Declined, Mode: ModeOnline, Amount: 100,
		Currency: "USD", TerminalID: "lane-1", CreatedAt: now, UpdatedAt: now}
	err = db.Update(context.Background(), func(tx *sql.Tx) error {
		if err := insertOrder(tx, Order{ID: "ord_1", Status: OrderOpen, Channel: WalkIn, Currency: "USD",
			Lines: []Line{{SKU: "A", Quantity: 1, UnitAmount: 100}}, TotalAmount: 100, CreatedAt: now, UpdatedAt: now}, "", ""); err != nil {
			return err
		}
		return insertPayment(tx, p)
	})
	if err != nil {
		t.Fatal(err)
	}
	p.Status = Captured
	err = db.Update(context.Background(), func(tx *sql.Tx) error { return save(tx, &p, Declined, "", now) })
	if err == nil || !strings.Contains(err.Error(), "illegal transition") {
		t.Fatalf("declined → captured saved: %v", err)
	}
	var status string
	db.Read().QueryRow(`SELECT status FROM payments WHERE id = 'pay_1'`).Scan(&status)
	if status != "declined" {
		t.Fatalf("the refused transition changed the payment to %s", status)
	}
}
