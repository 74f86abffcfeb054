package saf_test

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"storepay/gateway"
	"storepay/gateway/acquirer"
	"storepay/gateway/banksim"
	"storepay/migrations"
	"storepay/orders"
	"storepay/saf"
)

// failOnce fails the first forward outcome it is asked to commit, as a
// full disk or an I/O error would, and passes the rest on.
type failOnce struct {
	saf.Payments
	failed atomic.Bool
}

func (f *failOnce) ApplyForward(tx *sql.Tx, r orders.ForwardResult) error {
	if f.failed.CompareAndSwap(false, true) {
		return errors.New("disk I/O error")
	}
	return f.Payments.ApplyForward(tx, r)
}

// The bank approved a forward, and committing its answer failed once:
// the forwarder commits it again instead of leaving the record
// "forwarding" (out of everyone's reach) until a restart.
func TestForwardOutcomeCommitIsRetried(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := migrations.Open(ctx, filepath.Join(t.TempDir(), "storepay.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	sim := banksim.New(banksim.Config{APIKey: "key-a", Logger: log})
	t.Cleanup(func() { sim.Close() })
	u, err := sim.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	router, err := gateway.NewRouter([]gateway.BankSpec{{Name: "bank-a", Policy: gateway.Policy{ProbeInterval: -1},
		Endpoints: []gateway.Endpoint{acquirer.New(acquirer.Config{BaseURL: u, APIKey: "key-a", MerchantID: "store-042", Gateway: "bank-a"})}}}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(router.Close)
	vault, err := gateway.NewVault(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	svc := &orders.Service{DB: db, Bank: router, Vault: vault, Log: log}
	payments := &failOnce{Payments: svc}
	q := &saf.Queue{DB: db, Vault: vault, Bank: router, Payments: payments, Log: log,
		Rules:   saf.Rules{FloorLimit: 10000, TotalLimit: 500000},
		Forward: saf.ForwardPolicy{Interval: 10 * time.Millisecond}}
	svc.Offline = q
	o, err := svc.CreateOrder(ctx, orders.NewOrder{Channel: orders.WalkIn, Currency: "USD", TerminalID: "lane-1",
		Lines: []orders.Line{{SKU: "sku", Description: "thing", Quantity: 1, UnitAmount: 800}}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := svc.Pay(ctx, orders.PayRequest{OrderID: o.ID, TerminalID: "lane-1", OpKey: "lane-1\x00k1", Method: orders.Card,
		Amount: 800, OfflineBehavior: orders.ForceOffline, Card: &gateway.Card{PAN: "4242424242424242", ExpMonth: 12, ExpYear: 2030}})
	if err != nil || p.Status != orders.Stored {
		t.Fatalf("payment %+v, %v: want stored", p, err)
	}
	if err := q.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur, err := svc.Payment(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Status == orders.Captured {
			break
		}
		if time.Now().After(deadline) {
			r, _ := q.RecordForPayment(ctx, p.ID)
			t.Fatalf("payment %s, record %s after a failed commit; want captured", cur.Status, r.Status)
		}
		time.Sleep(10 * time.Millisecond) // polling the outcome, not waiting out a race
	}
	if !payments.failed.Load() {
		t.Fatal("the commit never failed: this test proves nothing")
	}
	r, err := q.RecordForPayment(ctx, p.ID)
	if err != nil || r.Status != saf.Forwarded {
		t.Fatalf("record %+v, %v: want forwarded", r, err)
	}
	if n := sim.Ledger().ChargesFor(p.ID); n != 1 {
		t.Fatalf("charged %d times", n)
	}
}
