package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"storepay/devices"
	"storepay/gateway"
	"storepay/gateway/acquirer"
	"storepay/gateway/banksim"
	"storepay/migrations"
	"storepay/orders"
	"storepay/web"
)

// A card payment whose outcome could not be written (the disk filled up
// between the bank's approval and the commit) answers 503; the till
// repeats it under its key once the disk has room. The repeat must resume
// the payment there and then, under the same bank key, and not be told
// idempotency_key_in_use until the first request's lease runs out: that
// request has returned, nothing runs. The game day found repeats refused
// this way for 40 s after a storage fault. The bank is asked under one
// key and charges once.
func TestRepeatAfterAFailedOutcomeWriteResumesAtOnce(t *testing.T) {
	ctx := context.Background()
	var failing, filled atomic.Bool
	db, err := migrations.OpenWith(ctx, filepath.Join(t.TempDir(), "storepay.db"), migrations.Options{
		BeforeCommit: func() error {
			if failing.Load() {
				return fmt.Errorf("disk full: %w", migrations.ErrStorageFault)
			}
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	reg := &devices.Registry{DB: db}
	token, err := reg.Enroll(ctx, "lane-1", devices.RoleTerminal)
	if err != nil {
		t.Fatal(err)
	}

	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	sim := banksim.New(banksim.Config{APIKey: "key-a", Logger: quiet})
	t.Cleanup(func() { sim.Close() })
	simURL, err := sim.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// In front of the bank, a proxy that fills the disk as the bank's
	// first approval comes back: the write of its outcome is the one that
	// fails.
	target, _ := url.Parse(simURL)
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ModifyResponse = func(r *http.Response) error {
		if strings.HasSuffix(r.Request.URL.Path, "/authorizations") && filled.CompareAndSwap(false, true) {
			failing.Store(true)
		}
		return nil
	}
	front := httptest.NewServer(proxy)
	t.Cleanup(front.Close)

	router, err := gateway.NewRouter([]gateway.BankSpec{{Name: "bank-a", Policy: gateway.Policy{ProbeInterval: -1},
		Endpoints: []gateway.Endpoint{acquirer.New(acquirer.Config{BaseURL: front.URL, APIKey: "key-a", MerchantID: "store-042", Gateway: "bank-a"})}}}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(router.Close)
	key, _ := gateway.ParseCardKey(testCardKey)
	vault, err := gateway.NewVault(key)
	if err != nil {
		t.Fatal(err)
	}
	// A budget long enough that a lease left behind would refuse the
	// repeat for the whole test.
	svc := &orders.Service{DB: db, Bank: router, Vault: vault, Log: quiet, AuthBudget: 2 * time.Minute}
	h := web.New(web.Config{DB: db, Orders: svc, Devices: reg, Router: router, Log: quiet}).Handler()
	do := func(path, idem, body string) (int, map[string]any) {
		req := httptest.NewRequest("POST", path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", idem)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var v map[string]any
		_ = json.Unmarshal(w.Body.Bytes(), &v)
		return w.Code, v
	}

	code, order := do("/v1/orders", "order-1", `{"channel":"walk_in","currency":"USD","lines":[{"sku":"LATTE-L","description":"Latte large","quantity":2,"unit_amount":450}]}`)
	if code != http.StatusCreated {
		t.Fatalf("create order: %d %v", code, order)
	}
	pay := fmt.Sprintf("/v1/orders/%s/payments", order["id"])
	body := `{"method":"card","amount":900,"tip_amount":0,"capture":true,"card":{"pan":"4242424242424242","exp_month":12,"exp_year":2030}}`
	code, first := do(pay, "pay-1", body)
	if code < 500 {
		t.Fatalf("the payment whose outcome could not be written answered %d %v; want a 5xx to repeat", code, first)
	}
	failing.Store(false) // the disk has room again

	code, again := do(pay, "pay-1", body)
	if code != http.StatusCreated && code != http.StatusOK {
		t.Fatalf("the repeat after the disk has room: %d %v; want the payment decided now", code, again)
	}
	if again["status"] != "captured" {
		t.Errorf("the repeat's payment is %v, want captured", again["status"])
	}
	approved := 0
	for _, a := range sim.Ledger().Authorizations {
		if a.Status == "approved" {
			approved++
		}
	}
	if approved != 1 {
		t.Errorf("the bank holds %d approved authorizations, want 1 (one charge)", approved)
	}
}
