package web

import (
	"context"
	"database/sql"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"storepay/migrations"
	"storepay/reconcile"
)

// getReconciliation on its own, on a real database: server.go registers
// it as GET /v1/reconciliations/{date} behind the manager check, which the
// end-to-end tests cover once the route is wired.
func TestGetReconciliation(t *testing.T) {
	ctx := context.Background()
	db, err := migrations.Open(ctx, filepath.Join(t.TempDir(), "storepay.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// One capture of the day, settled by the bank's report.
	err = db.Update(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`INSERT INTO orders (id, status, channel, currency, lines, total_amount, terminal_id, created_at, updated_at)
			VALUES ('ord_1', 'paid', 'walk_in', 'USD', '[]', 1450, 'lane-3', '2026-11-21T09:00:00.000000000Z', '2026-11-21T09:00:00.000000000Z')`); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO payments (id, order_id, method, status, mode, gateway, amount, captured_amount, captured_at,
			currency, capture, bank_auth_id, terminal_id, created_at, updated_at) VALUES ('pay_1', 'ord_1', 'card', 'captured', 'online',
			'bank-a', 1450, 1450, '2026-11-21T09:00:01.000000000Z', 'USD', 1, 'auth_1', 'lane-3', '2026-11-21T09:00:00.000000000Z', '2026-11-21T09:00:01.000000000Z')`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	report := "batch_number,merchant_id,psp_reference,merchant_reference,type,booking_date,currency,gross_amount,fee_amount,net_amount,card_last4,auth_code\n" +
		"b,store-042,auth_1,pay_1,Settled,2026-11-21T09:00:02Z,USD,1450,-72,1378,4242,A1\n" +
		"b,store-042,auth_9,pay_9,Settled,2026-11-21T10:00:00Z,USD,999,-59,940,4242,A9\n"
	res, err := reconcile.Reconcile(ctx, db, reconcile.Input{Date: "2026-11-21",
		Sources: []reconcile.Source{reconcile.BytesSource("bank-a", "store-042", "test", []byte(report))}})
	if err != nil {
		t.Fatal(err)
	}
	if err := reconcile.Save(ctx, db, res); err != nil {
		t.Fatal(err)
	}

	s := New(Config{DB: db})
	router := chi.NewRouter()
	router.Get("/v1/reconciliations/{date}", s.getReconciliation)
	get := func(path string) (*httptest.ResponseRecorder, map[string]any) {
		w := httptest.NewRecorder()
		router.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path, nil))
		var body map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatalf("GET %s: not JSON: %s", path, w.Body)
		}
		return w, body
	}

	t.Run("LastRun", func(t *testing.T) {
		w, body := get("/v1/reconciliations/2026-11-21")
		if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("%d %s", w.Code, w.Body)
		}
		if body["date"] != "2026-11-21" || body["status"] != "discrepancies" || body["summary"] == nil {
			t.Errorf("body %v", body)
		}
		items, _ := body["items"].([]any)
		if len(items) != 2 {
			t.Fatalf("%d items, want 2", len(items))
		}
		// The contract's fields, on every item.
		for _, raw := range items {
			it := raw.(map[string]any)
			for _, k := range []string{"category", "gateway", "payment_id", "psp_reference", "store_amount", "bank_amount", "detail"} {
				if _, ok := it[k]; !ok {
					t.Errorf("item without %s: %v", k, it)
				}
			}
		}
		first := items[0].(map[string]any)
		if first["category"] != "missing_in_store" || first["payment_id"] != "pay_9" || first["bank_amount"] != 999.0 || first["store_amount"] != 0.0 {
			t.Errorf("first item %v, want pay_9 missing in store for 999", first)
		}
	})
	t.Run("NeverRun", func(t *testing.T) {
		w, body := get("/v1/reconciliations/2026-11-20")
		if w.Code != http.StatusNotFound || body["code"] != "reconciliation_not_found" ||
			!strings.HasPrefix(w.Header().Get("Content-Type"), "application/problem+json") {
			t.Errorf("%d %v", w.Code, body)
		}
	})
	t.Run("MalformedDate", func(t *testing.T) {
		for _, d := range []string{"21-11-2026", "2026-11-31", "yesterday", "2026-1-5"} {
			w, body := get("/v1/reconciliations/" + d)
			if w.Code != http.StatusBadRequest || body["code"] != "invalid_date" {
				t.Errorf("%s: %d %v, want 400 invalid_date", d, w.Code, body)
			}
		}
	})
}
