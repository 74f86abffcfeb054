package hq

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"storepay/migrations"
	"storepay/orders"
)

// The view counts as expiring soon the outstanding offline payments with
// less than a third of their store's max age left, per store and for the
// chain; the max age is the one each store reports.
func TestViewExpiringSoon(t *testing.T) {
	ctx := context.Background()
	db, err := OpenHubDB(ctx, filepath.Join(t.TempDir(), "hq.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	h := &Hub{DB: db, Now: func() time.Time { return now }}
	if _, err := db.Exec(`INSERT INTO stores (store_id) VALUES ('store-1'), ('store-2')`); err != nil {
		t.Fatal(err)
	}
	// store-2 reported a 6-hour max age: after 4 hours a record expires soon.
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	if err := applyEvent(tx, "store-2", Event{Seq: 1, Type: "status", Data: []byte(`{"gateways":[],"saf_max_age_seconds":21600}`)}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct {
		store, id, status string
		age               time.Duration
		amount            int64
	}{
		{"store-1", "a", "queued", 50 * time.Hour, 100},     // 72 h max: 22 h left, expiring soon
		{"store-1", "b", "queued", 10 * time.Hour, 200},     // plenty left
		{"store-1", "c", "forwarded", 60 * time.Hour, 400},  // not outstanding
		{"store-1", "d", "held", 49 * time.Hour, 800},       // held counts: it is still owed
		{"store-2", "e", "forwarding", 5 * time.Hour, 1600}, // 6 h max: 1 h left
		{"store-2", "f", "queued", 3 * time.Hour, 3200},     // 3 h left of 6: not yet
	} {
		if _, err := db.Exec(`INSERT INTO saf (store_id, id, payment_id, status, amount, currency, created_at) VALUES (?, ?, ?, ?, ?, 'USD', ?)`,
			r.store, r.id, "pay_"+r.id, r.status, r.amount, migrations.FormatTime(now.Add(-r.age))); err != nil {
			t.Fatal(err)
		}
	}
	e, err := h.ChainExposure(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if e.ExpiringSoon != 3 || e.ExpiringSoonAmount != 100+800+1600 || e.SAFCount != 5 {
		t.Errorf("chain: %d expiring soon (%d), %d outstanding; want 3 (2500), 5", e.ExpiringSoon, e.ExpiringSoonAmount, e.SAFCount)
	}
	stores, err := h.Stores(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]int64{}
	for _, s := range stores {
		got[s.StoreID] = [2]int64{s.SAF.ExpiringSoon, s.SAF.ExpiringSoonAmount}
	}
	if got["store-1"] != [2]int64{2, 900} || got["store-2"] != [2]int64{1, 1600} {
		t.Errorf("per store: %v", got)
	}

	// The console shows them, in money.
	tok, err := Enroll(ctx, db, "it")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h.Handler())
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+"/console", nil)
	req.AddCookie(&http.Cookie{Name: consoleCookie, Value: tok})
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	page, _ := io.ReadAll(res.Body)
	for _, want := range []string{"expiring soon: 3 (" + orders.FormatMoney(2500, "USD") + ")", orders.FormatMoney(900, "USD"), "store-2"} {
		if res.StatusCode != http.StatusOK || !strings.Contains(string(page), want) {
			t.Errorf("console (%d) lacks %q:\n%s", res.StatusCode, want, page)
		}
	}
}
