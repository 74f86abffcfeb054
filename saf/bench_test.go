package saf_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"storepay/gateway"
	"storepay/migrations"
	"storepay/orders"
	"storepay/saf"
)

// noBank is every bank down: the router's answer when every breaker is
// open. Only Preferred is asked on the offline path.
type noBank struct{ orders.Bank }

func (noBank) Preferred() string { return "" }

// BenchmarkOfflineAccept measures what the single writer spends on one
// payment accepted offline (the database work behind a "stored" answer,
// without HTTP): go test ./saf -run '^$' -bench OfflineAccept -benchtime 20000x
// Many goroutines pay at once, so that group commit works as it does
// with many terminals; ns/op is the inverse of the acceptance rate.
func BenchmarkOfflineAccept(b *testing.B) {
	ctx := context.Background()
	db, err := migrations.Open(ctx, filepath.Join(b.TempDir(), "storepay.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	key := make([]byte, 32)
	vault, err := gateway.NewVault(key)
	if err != nil {
		b.Fatal(err)
	}
	svc := &orders.Service{DB: db, Bank: noBank{}, Vault: vault}
	q := &saf.Queue{DB: db, Vault: vault, Payments: svc,
		Rules: saf.Rules{FloorLimit: 1 << 40, TotalLimit: 1 << 50}}
	svc.Offline = q
	ids := make([]string, b.N)
	for i := range ids {
		o, err := svc.CreateOrder(ctx, orders.NewOrder{Channel: orders.WalkIn, Currency: "USD", TerminalID: "lane-1",
			Lines: []orders.Line{{SKU: "sku", Description: "thing", Quantity: 1, UnitAmount: 100_000}}})
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = o.ID
	}
	var next atomic.Int64
	b.SetParallelism(32)
	before := db.WriterStats()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			opKey := fmt.Sprintf("dev_1\x00key-%d", i)
			// The answer is recorded in the payment's transaction, as the
			// web layer does it.
			reply := replyFunc(func(tx *sql.Tx, result any) error {
				body, err := json.Marshal(result)
				if err != nil {
					return err
				}
				_, err = tx.Exec(`INSERT INTO idempotency (device_id, key, request_hash, status_code, content_type, location, body, created_at)
					VALUES ('dev_1', ?, 'hash', 201, 'application/json', '', ?, ?)`, opKey, body, migrations.FormatTime(time.Now()))
				return err
			})
			p, err := svc.Pay(ctx, orders.PayRequest{OrderID: ids[i], TerminalID: "lane-1",
				Request: orders.Request{Key: opKey, Hash: "hash", Reply: reply},
				Method:  orders.Card, Amount: 100 + i%5000, Card: &gateway.Card{PAN: gateway.WithCheckDigit(fmt.Sprintf("45%013d", i)), ExpMonth: 12, ExpYear: 2030}})
			if err != nil {
				b.Fatal(err)
			}
			if p.Status != orders.Stored {
				b.Fatalf("payment %s is %s, want stored", p.ID, p.Status)
			}
		}
	})
	b.StopTimer()
	ws := db.WriterStats()
	commits := ws.Batches - before.Batches
	b.ReportMetric(float64(ws.Writes-before.Writes)/float64(max(commits, 1)), "payments/commit")
	b.ReportMetric(float64((ws.ExecTime-before.ExecTime).Microseconds())/float64(b.N), "µs-exec/op")
	b.ReportMetric(float64((ws.CommitTime-before.CommitTime).Microseconds())/float64(b.N), "µs-commit/op")
}

// replyFunc is an orders.Reply from a function.
type replyFunc func(tx *sql.Tx, result any) error

func (f replyFunc) Store(tx *sql.Tx, result any) error { return f(tx, result) }
