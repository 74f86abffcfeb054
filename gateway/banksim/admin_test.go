package banksim_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"storepay/gateway/banksim"
)

// adminClient serves sim's admin API on a loopback port of its own.
func adminClient(t *testing.T, sim *banksim.Sim) *bank {
	t.Helper()
	srv := httptest.NewServer(sim.AdminHandler())
	t.Cleanup(srv.Close)
	a := newBank(t, srv.URL)
	a.key = ""
	return a
}

func TestAdmin(t *testing.T) {
	sim, b := start(t, banksim.Config{})
	adminURL, err := sim.ListenAdmin("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin := newBank(t, adminURL)
	admin.key = ""
	sale := b.authorize("pay_admin", 100, true)

	t.Run("Ledger", func(t *testing.T) {
		r := admin.get("/admin/ledger")
		wantStatus(t, r, http.StatusOK)
		var l banksim.Ledger
		r.decode(t, &l)
		if len(l.Authorizations) != 1 || l.Authorizations[0].ID != sale.ID || l.Calls(b.url, banksim.EndpointAuthorize) != 1 {
			t.Errorf("ledger = %s", r.body)
		}
	})
	t.Run("Faults", func(t *testing.T) {
		r := admin.do(http.MethodPut, "/admin/faults", "", `{"url":"`+b.url+`","latency":{"fixed":"1ms","next":3},"rate_limit":{"per_second":5,"retry_after":"2s"},"error":{"probability":0.25}}`)
		wantStatus(t, r, http.StatusOK)
		f := sim.Faults()[b.url]
		if f.Latency == nil || f.Latency.Fixed.Milliseconds() != 1 || f.Latency.Next != 3 ||
			f.RateLimit == nil || f.RateLimit.PerSecond != 5 || f.RateLimit.RetryAfter.Seconds() != 2 ||
			f.Error == nil || f.Error.Probability != 0.25 {
			t.Errorf("installed faults = %+v", f)
		}
		wantStatus(t, admin.do(http.MethodPut, "/admin/faults", "", `{"not_processed":{}}`), http.StatusOK)
		wantError(t, b.get("/v1/health"), http.StatusServiceUnavailable, "not_processed")

		wantStatus(t, admin.do(http.MethodDelete, "/admin/faults", "", nil), http.StatusOK)
		if f := sim.Faults(); len(f) != 0 {
			t.Errorf("faults after DELETE = %+v", f)
		}
		wantStatus(t, b.get("/v1/health"), http.StatusOK)

		wantError(t, admin.do(http.MethodPut, "/admin/faults", "", `{"blackhole":{"probability":-1}}`), http.StatusBadRequest, "invalid_request")
		wantError(t, admin.do(http.MethodPut, "/admin/faults", "", `{"url":"http://127.0.0.1:1","refuse":true}`), http.StatusBadRequest, "invalid_request")
		wantError(t, admin.do(http.MethodPut, "/admin/faults", "", `{"latency":{"fixed":"soon"}}`), http.StatusBadRequest, "invalid_request")
	})
	t.Run("RefuseLeavesAdminUp", func(t *testing.T) {
		wantStatus(t, admin.do(http.MethodPut, "/admin/faults", "", `{"refuse":true}`), http.StatusOK)
		if _, err := b.try(t.Context(), http.MethodGet, "/v1/health", "", nil); err == nil {
			t.Error("a refusing listener answered")
		}
		wantStatus(t, admin.do(http.MethodDelete, "/admin/faults", "", nil), http.StatusOK)
		wantStatus(t, b.get("/v1/health"), http.StatusOK)
	})
	t.Run("CloseAndRows", func(t *testing.T) {
		wantError(t, admin.post("/admin/close?date=tomorrow", "", nil), http.StatusBadRequest, "invalid_request")
		wantError(t, admin.post("/admin/settlement-rows?date=2026-11-21", "", nil), http.StatusBadRequest, "invalid_request")
		wantStatus(t, admin.post("/admin/close", "", nil), http.StatusOK) // today
		if rows := settlementRows(t, b, "2026-11-21"); len(rows) != 1 {
			t.Errorf("rows = %v", rows)
		}
	})
	t.Run("Reset", func(t *testing.T) {
		wantStatus(t, admin.do(http.MethodPut, "/admin/faults", "", `{"unauthorized":{}}`), http.StatusOK)
		wantStatus(t, admin.post("/admin/reset", "", nil), http.StatusOK)
		l := sim.Ledger()
		if len(l.Authorizations) != 0 || l.Calls("", "") != 0 || len(l.ClosedDays) != 0 || len(sim.Faults()) != 0 {
			t.Errorf("ledger after reset = %+v", l)
		}
		// The idempotency keys are gone too: the same key books anew.
		r := b.post("/v1/authorizations", "key-pay_admin", authBody("pay_admin", goodPAN, 100, true))
		if r.header.Get("Idempotent-Replayed") != "" || r.auth(t).ID == sale.ID {
			t.Errorf("after reset: %s", r.body)
		}
	})
}
