package banksim_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"storepay/gateway/banksim"
)

func TestHealth(t *testing.T) {
	_, b := start(t, banksim.Config{})

	t.Run("OK", func(t *testing.T) {
		r := b.get("/v1/health")
		wantStatus(t, r, http.StatusOK)
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q", ct)
		}
		var h struct{ Status string }
		r.decode(t, &h)
		if h.Status != "ok" {
			t.Errorf("status = %q, want ok", h.Status)
		}
	})
	t.Run("WrongKeyUnauthorized", func(t *testing.T) {
		other := newBank(t, b.url)
		other.key = "sk_wrong"
		wantError(t, other.get("/v1/health"), http.StatusUnauthorized, "unauthorized")
	})
	t.Run("NoKeyUnauthorized", func(t *testing.T) {
		other := newBank(t, b.url)
		other.key = ""
		wantError(t, other.post("/v1/authorizations", "k1", authBody("pay_1", goodPAN, 100, true)), http.StatusUnauthorized, "unauthorized")
	})
	t.Run("UnknownPathNotFound", func(t *testing.T) {
		wantError(t, b.get("/v2/nothing"), http.StatusNotFound, "not_found")
	})
}

func TestAuthorize(t *testing.T) {
	sim, b := start(t, banksim.Config{MerchantID: "store-042"})

	t.Run("ApprovedSale", func(t *testing.T) {
		r := b.post("/v1/authorizations", "k-sale", authBody("pay_sale", goodPAN, 1250, true))
		wantStatus(t, r, http.StatusOK)
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q", ct)
		}
		a := r.auth(t)
		if a.Status != "approved" || a.Amount != 1250 || a.CapturedAmount != 1250 || a.Currency != "USD" ||
			a.Reference != "pay_sale" || !strings.HasPrefix(a.ID, "auth_") || len(a.AuthCode) != 6 || a.DeclineCode != "" {
			t.Errorf("sale = %+v", a)
		}
		if !a.CreatedAt.Equal(day0) || a.CreatedAt.Location().String() != "UTC" {
			t.Errorf("created_at = %v, want %v UTC", a.CreatedAt, day0)
		}
	})
	t.Run("PreAuthorizationNotCaptured", func(t *testing.T) {
		a := b.authorize("pay_pre", 1000, false)
		if a.Status != "approved" || a.CapturedAmount != 0 {
			t.Errorf("pre-authorization = %+v", a)
		}
	})
	t.Run("TestCardsDecline", func(t *testing.T) {
		for pan, code := range map[string]string{
			"4000000000000002": "do_not_honor",
			"4000000000009995": "insufficient_funds",
			"4000000000000069": "expired_card",
			"4000000000009979": "lost_or_stolen",
		} {
			r := b.post("/v1/authorizations", "k-"+pan, authBody("pay_"+pan, pan, 500, true))
			wantStatus(t, r, http.StatusOK)
			a := r.auth(t)
			if a.Status != "declined" || a.DeclineCode != code || a.AuthCode != "" || a.CapturedAmount != 0 {
				t.Errorf("%s: got %+v, want declined %s", pan, a, code)
			}
		}
	})
	t.Run("ExpiredCardDeclined", func(t *testing.T) {
		body := authBody("pay_expired", goodPAN, 500, true)
		body["card"] = map[string]any{"pan": goodPAN, "exp_month": 10, "exp_year": 2026}
		a := b.post("/v1/authorizations", "k-expired", body).auth(t)
		if a.Status != "declined" || a.DeclineCode != "expired_card" {
			t.Errorf("got %+v, want declined expired_card", a)
		}
	})
	t.Run("LuhnFailureInvalidCard", func(t *testing.T) {
		r := b.post("/v1/authorizations", "k-luhn", authBody("pay_luhn", "4242424242424241", 500, true))
		wantError(t, r, http.StatusUnprocessableEntity, "invalid_card")
	})
	t.Run("OtherMerchantRejected", func(t *testing.T) {
		body := authBody("pay_other", goodPAN, 500, true)
		body["merchant_id"] = "store-999"
		wantError(t, b.post("/v1/authorizations", "k-other", body), http.StatusUnprocessableEntity, "invalid_merchant")
	})
	t.Run("MalformedRequests", func(t *testing.T) {
		for name, body := range map[string]any{
			"NotJSON":      `{"amount":`,
			"UnknownField": `{"merchant_id":"store-042","reference":"r","amount":1,"currency":"USD","card":{"pan":"4242424242424242","exp_month":1,"exp_year":2030},"tip":5}`,
			"ZeroAmount":   authBody("pay_zero", goodPAN, 0, true),
			"NoReference":  authBody("", goodPAN, 100, true),
		} {
			wantError(t, b.post("/v1/authorizations", "k-bad-"+name, body), http.StatusBadRequest, "invalid_request")
		}
	})
	t.Run("MissingIdempotencyKey", func(t *testing.T) {
		wantError(t, b.post("/v1/authorizations", "", authBody("pay_nokey", goodPAN, 100, true)), http.StatusBadRequest, "missing_idempotency_key")
	})
	t.Run("LedgerKeepsLast4Only", func(t *testing.T) {
		l := sim.Ledger()
		data, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(data), goodPAN) {
			t.Error("the ledger holds a full card number")
		}
		a, ok := l.Find(b.post("/v1/authorizations", "k-sale", authBody("pay_sale", goodPAN, 1250, true)).auth(t).ID)
		if !ok || a.CardLast4 != "4242" || a.IdempotencyKey != "k-sale" || a.MerchantID != "store-042" || a.TerminalID != "lane-3" {
			t.Errorf("ledger entry = %+v", a)
		}
	})
}

func TestIdempotency(t *testing.T) {
	sim, b := start(t, banksim.Config{MoreAPIKeys: []string{"sk_second_account"}})

	t.Run("SameBodyReplays", func(t *testing.T) {
		first := b.post("/v1/authorizations", "k-replay", authBody("pay_replay", goodPAN, 700, true))
		wantStatus(t, first, http.StatusOK)
		if h := first.header.Get("Idempotent-Replayed"); h != "" {
			t.Errorf("first answer has Idempotent-Replayed %q", h)
		}
		again := b.post("/v1/authorizations", "k-replay", authBody("pay_replay", goodPAN, 700, true))
		wantStatus(t, again, http.StatusOK)
		if h := again.header.Get("Idempotent-Replayed"); h != "true" {
			t.Errorf("Idempotent-Replayed = %q, want true", h)
		}
		if string(again.body) != string(first.body) {
			t.Errorf("replayed body %s, want %s", again.body, first.body)
		}
		if n := sim.Ledger().ChargesFor("pay_replay"); n != 1 {
			t.Errorf("charges = %d, want 1", n)
		}
	})
	t.Run("SameCanonicalJSONReplays", func(t *testing.T) {
		a := `{"merchant_id":"store-042","reference":"pay_canon","amount":300,"currency":"USD","capture":true,"card":{"pan":"4242424242424242","exp_month":12,"exp_year":2030}}`
		b2 := "{ \"card\": {\"exp_year\":2030, \"exp_month\":12, \"pan\":\"4242424242424242\"},\n \"capture\":true, \"currency\":\"USD\", \"amount\":300, \"reference\":\"pay_canon\", \"merchant_id\":\"store-042\" }"
		first := b.post("/v1/authorizations", "k-canon", a)
		again := b.post("/v1/authorizations", "k-canon", b2)
		wantStatus(t, again, http.StatusOK)
		if again.header.Get("Idempotent-Replayed") != "true" || string(again.body) != string(first.body) {
			t.Errorf("reformatted body was not replayed: %d %s", again.status, again.body)
		}
	})
	t.Run("QuotedKeyIsTheSameKey", func(t *testing.T) {
		first := b.post("/v1/authorizations", "k-quoted", authBody("pay_quoted", goodPAN, 300, true))
		again := b.post("/v1/authorizations", `"k-quoted"`, authBody("pay_quoted", goodPAN, 300, true))
		if again.header.Get("Idempotent-Replayed") != "true" || string(again.body) != string(first.body) {
			t.Errorf("quoted key was not replayed: %d %s", again.status, again.body)
		}
	})
	t.Run("OtherBodyIsReuse", func(t *testing.T) {
		b.post("/v1/authorizations", "k-reuse", authBody("pay_reuse", goodPAN, 700, true))
		r := b.post("/v1/authorizations", "k-reuse", authBody("pay_reuse", goodPAN, 701, true))
		wantError(t, r, http.StatusUnprocessableEntity, "idempotency_key_reuse")
		if n := len(sim.Ledger().Authorizations); n != 4 {
			t.Errorf("authorizations = %d, want 4 (nothing done on reuse)", n)
		}
	})
	t.Run("ErrorAnswersReplay", func(t *testing.T) {
		body := authBody("pay_badcard", "4242424242424241", 100, true)
		wantError(t, b.post("/v1/authorizations", "k-badcard", body), http.StatusUnprocessableEntity, "invalid_card")
		again := b.post("/v1/authorizations", "k-badcard", body)
		wantError(t, again, http.StatusUnprocessableEntity, "invalid_card")
		if again.header.Get("Idempotent-Replayed") != "true" {
			t.Error("the 422 was not replayed")
		}
	})
	t.Run("KeysArePerAPIKey", func(t *testing.T) {
		other := newBank(t, b.url)
		other.key = "sk_second_account"
		r := other.post("/v1/authorizations", "k-replay", authBody("pay_replay", goodPAN, 700, true))
		wantStatus(t, r, http.StatusOK)
		if r.header.Get("Idempotent-Replayed") != "" {
			t.Error("another API key's answer was replayed")
		}
		// And the second account does not see the first one's payments.
		if l := other.get("/v1/authorizations?reference=pay_canon").list(t); len(l) != 0 {
			t.Errorf("second account sees %d authorizations of the first", len(l))
		}
	})
	t.Run("InUseWhileRunning", func(t *testing.T) {
		if err := sim.SetFaults("", banksim.Faults{Latency: &banksim.Latency{Fixed: time.Hour, Fault: banksim.Fault{Next: 1}}}); err != nil {
			t.Fatal(err)
		}
		body := authBody("pay_inuse", goodPAN, 900, true)
		first := async(func() replyOrErr {
			r, err := b.try(context.Background(), http.MethodPost, "/v1/authorizations", "k-inuse", body)
			return replyOrErr{r, err}
		})
		eventually(t, "the first request to hold its key", func() bool { return sim.Ledger().InFlight == 1 })

		wantError(t, b.post("/v1/authorizations", "k-inuse", body), http.StatusConflict, "idempotency_key_in_use")
		wantError(t, b.get("/v1/authorizations?idempotency_key=k-inuse"), http.StatusConflict, "idempotency_key_in_use")
		wantError(t, b.get("/v1/authorizations?reference=pay_inuse"), http.StatusConflict, "authorization_in_progress")
		wantError(t, b.post("/v1/reversals", "k-inuse-rev", map[string]any{"reference": "pay_inuse"}), http.StatusConflict, "authorization_in_progress")

		if err := sim.ClearFaults(); err != nil { // releases the first request
			t.Fatal(err)
		}
		got := await(t, first)
		if got.err != nil {
			t.Fatal(got.err)
		}
		wantStatus(t, got.reply, http.StatusOK)
		again := b.post("/v1/authorizations", "k-inuse", body)
		if again.header.Get("Idempotent-Replayed") != "true" || string(again.body) != string(got.reply.body) {
			t.Errorf("after the first finished: %d %s", again.status, again.body)
		}
		if n := sim.Ledger().ChargesFor("pay_inuse"); n != 1 {
			t.Errorf("charges = %d, want 1", n)
		}
	})
}

type replyOrErr struct {
	reply
	err error
}

func TestLookup(t *testing.T) {
	_, b := start(t, banksim.Config{})
	first := b.authorize("pay_look", 100, true)
	second := b.post("/v1/authorizations", "k-look-2", authBody("pay_look", "4000000000000002", 100, true)).auth(t)

	t.Run("ByReference", func(t *testing.T) {
		l := b.get("/v1/authorizations?reference=pay_look").list(t)
		if len(l) != 2 || l[0].ID != first.ID || l[1].ID != second.ID || l[1].Status != "declined" {
			t.Errorf("by reference = %+v", l)
		}
	})
	t.Run("ByIdempotencyKey", func(t *testing.T) {
		l := b.get("/v1/authorizations?idempotency_key=key-pay_look").list(t)
		if len(l) != 1 || l[0] != first {
			t.Errorf("by key = %+v, want [%+v]", l, first)
		}
	})
	t.Run("NeverProcessedIsEmpty", func(t *testing.T) {
		for _, q := range []string{"reference=pay_never", "idempotency_key=k-never"} {
			r := b.get("/v1/authorizations?" + q)
			wantStatus(t, r, http.StatusOK)
			if string(r.body) != "{\"data\":[]}\n" {
				t.Errorf("%s: body %s, want an empty data list", q, r.body)
			}
		}
	})
	t.Run("NeedsExactlyOneParameter", func(t *testing.T) {
		wantError(t, b.get("/v1/authorizations"), http.StatusBadRequest, "invalid_request")
		wantError(t, b.get("/v1/authorizations?reference=a&idempotency_key=b"), http.StatusBadRequest, "invalid_request")
	})
}

func TestCapture(t *testing.T) {
	_, b := start(t, banksim.Config{})
	capture := func(id, key string, amount int64) reply {
		return b.post("/v1/authorizations/"+id+"/captures", key, map[string]any{"amount": amount})
	}

	t.Run("UpToTwentyPercentMore", func(t *testing.T) {
		pre := b.authorize("pay_tip", 1000, false)
		wantError(t, capture(pre.ID, "cap-tip-1", 1201), http.StatusUnprocessableEntity, "capture_exceeds_authorization")
		r := capture(pre.ID, "cap-tip-2", 1200)
		wantStatus(t, r, http.StatusOK)
		if a := r.auth(t); a.CapturedAmount != 1200 || a.Amount != 1000 || a.Status != "approved" {
			t.Errorf("captured = %+v", a)
		}
		if again := capture(pre.ID, "cap-tip-2", 1200); again.header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("same-key capture: %d %s, want a replay", again.status, again.body)
		}
		wantError(t, capture(pre.ID, "cap-tip-3", 1200), http.StatusUnprocessableEntity, "already_captured")
	})
	t.Run("SaleIsAlreadyCaptured", func(t *testing.T) {
		sale := b.authorize("pay_cap_sale", 1000, true)
		wantError(t, capture(sale.ID, "cap-sale", 1000), http.StatusUnprocessableEntity, "already_captured")
	})
	t.Run("NoAmountCapturesAuthorized", func(t *testing.T) {
		pre := b.authorize("pay_full", 800, false)
		r := b.post("/v1/authorizations/"+pre.ID+"/captures", "cap-full", `{}`)
		if a := r.auth(t); a.CapturedAmount != 800 {
			t.Errorf("captured = %d, want 800", a.CapturedAmount)
		}
	})
	t.Run("DeclinedIsNotApproved", func(t *testing.T) {
		d := b.post("/v1/authorizations", "k-cap-declined", authBody("pay_cap_declined", "4000000000009995", 500, false)).auth(t)
		wantError(t, capture(d.ID, "cap-declined", 500), http.StatusUnprocessableEntity, "not_approved")
	})
	t.Run("UnknownNotFound", func(t *testing.T) {
		wantError(t, capture("auth_nope", "cap-nope", 100), http.StatusNotFound, "not_found")
	})
}

func TestReversal(t *testing.T) {
	sim, b := start(t, banksim.Config{})
	reverse := func(id, key string) reply {
		return b.post("/v1/authorizations/"+id+"/reversals", key, nil)
	}

	t.Run("ByID", func(t *testing.T) {
		a := b.authorize("pay_rev", 1000, true)
		r := reverse(a.ID, "rev-1")
		wantStatus(t, r, http.StatusOK)
		if got := r.auth(t); got.Status != "reversed" || got.ID != a.ID {
			t.Errorf("reversed = %+v", got)
		}
		if n := sim.Ledger().ChargesFor("pay_rev"); n != 0 {
			t.Errorf("charges after reversal = %d, want 0", n)
		}
	})
	t.Run("AgainIsNoOp", func(t *testing.T) {
		a := b.authorize("pay_rev_twice", 1000, true)
		reverse(a.ID, "rev-twice-1")
		r := reverse(a.ID, "rev-twice-2")
		wantStatus(t, r, http.StatusOK)
		if r.header.Get("Idempotent-Replayed") != "" || r.auth(t).Status != "reversed" {
			t.Errorf("second reversal = %d %s", r.status, r.body)
		}
	})
	t.Run("ByReference", func(t *testing.T) {
		a1 := b.authorize("pay_rev_ref", 500, false)
		a2 := b.post("/v1/authorizations", "k-rev-ref-2", authBody("pay_rev_ref", goodPAN, 500, true)).auth(t)
		b.post("/v1/authorizations", "k-rev-ref-3", authBody("pay_rev_ref", "4000000000000002", 500, true))
		l := b.post("/v1/reversals", "rev-ref", map[string]any{"reference": "pay_rev_ref"}).list(t)
		if len(l) != 2 || l[0].ID != a1.ID || l[1].ID != a2.ID || l[0].Status != "reversed" || l[1].Status != "reversed" {
			t.Errorf("reversed by reference = %+v", l)
		}
		if n := sim.Ledger().ChargesFor("pay_rev_ref"); n != 0 {
			t.Errorf("charges = %d, want 0", n)
		}
		if l := b.post("/v1/reversals", "rev-ref-none", map[string]any{"reference": "pay_unknown"}).list(t); len(l) != 0 {
			t.Errorf("reversing an unknown reference listed %+v", l)
		}
	})
	t.Run("SettledIsRejected", func(t *testing.T) {
		sale := b.authorize("pay_settled", 1000, true)
		pre := b.authorize("pay_settled_pre", 1000, false)
		if err := sim.CloseDay("2026-11-21"); err != nil {
			t.Fatal(err)
		}
		wantError(t, reverse(sale.ID, "rev-settled"), http.StatusUnprocessableEntity, "already_settled")
		wantError(t, b.post("/v1/reversals", "rev-settled-ref", map[string]any{"reference": "pay_settled"}), http.StatusUnprocessableEntity, "already_settled")
		// A pre-authorization never captured has nothing settled.
		wantStatus(t, reverse(pre.ID, "rev-settled-pre"), http.StatusOK)
	})
	t.Run("UnknownNotFound", func(t *testing.T) {
		wantError(t, reverse("auth_nope", "rev-nope"), http.StatusNotFound, "not_found")
	})
}

func TestRefund(t *testing.T) {
	_, b := start(t, banksim.Config{})
	refund := func(id, key string, amount int64) reply {
		return b.post("/v1/refunds", key, map[string]any{"authorization_id": id, "amount": amount, "reference": "ref_" + key})
	}
	sale := b.authorize("pay_refund", 1000, true)

	r := refund(sale.ID, "rfd-1", 600)
	wantStatus(t, r, http.StatusOK)
	var got struct {
		ID, AuthorizationID, Status string
		Amount                      int64
	}
	r.decode(t, &got)
	if !strings.HasPrefix(got.ID, "rfd_") || got.Status != "refunded" || got.Amount != 600 {
		t.Errorf("refund = %s", r.body)
	}
	wantError(t, refund(sale.ID, "rfd-2", 401), http.StatusUnprocessableEntity, "refund_exceeds_capture")
	wantStatus(t, refund(sale.ID, "rfd-3", 400), http.StatusOK)
	wantError(t, refund(sale.ID, "rfd-4", 1), http.StatusUnprocessableEntity, "refund_exceeds_capture")

	pre := b.authorize("pay_refund_pre", 1000, false)
	wantError(t, refund(pre.ID, "rfd-pre", 1), http.StatusUnprocessableEntity, "refund_exceeds_capture")
	wantError(t, refund("auth_nope", "rfd-nope", 1), http.StatusNotFound, "not_found")
	wantError(t, refund(sale.ID, "rfd-zero", 0), http.StatusBadRequest, "invalid_request")
}

func TestSharedLedgerAcrossListeners(t *testing.T) {
	sim, a := start(t, banksim.Config{})
	urlB, err := sim.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := newBank(t, urlB)

	first := a.authorize("pay_shared", 100, true)
	// A retry at the bank's other URL is the same request.
	again := b.post("/v1/authorizations", "key-pay_shared", authBody("pay_shared", goodPAN, 100, true))
	if again.header.Get("Idempotent-Replayed") != "true" || again.auth(t).ID != first.ID {
		t.Errorf("retry at the other URL: %d %s", again.status, again.body)
	}
	if l := b.get("/v1/authorizations?reference=pay_shared").list(t); len(l) != 1 {
		t.Errorf("lookup at the other URL = %+v", l)
	}

	l := sim.Ledger()
	for _, c := range []struct {
		url, endpoint string
		want          int64
	}{
		{a.url, banksim.EndpointAuthorize, 1},
		{urlB, banksim.EndpointAuthorize, 1},
		{urlB, banksim.EndpointFind, 1},
		{a.url, banksim.EndpointFind, 0},
		{"", banksim.EndpointAuthorize, 2},
		{"", "", 3},
	} {
		if got := l.Calls(c.url, c.endpoint); got != c.want {
			t.Errorf("Calls(%q, %q) = %d, want %d", c.url, c.endpoint, got, c.want)
		}
	}
	if got := sim.URLs(); len(got) != 2 || got[0] != a.url || got[1] != urlB {
		t.Errorf("URLs = %v", got)
	}
}
