package banksim_test

import (
	"context"
	"errors"
	"net/http"
	"syscall"
	"testing"
	"time"

	"storepay/gateway/banksim"
)

func setFaults(t *testing.T, sim *banksim.Sim, url string, f banksim.Faults) {
	t.Helper()
	if err := sim.SetFaults(url, f); err != nil {
		t.Fatal(err)
	}
}

func clearFaults(t *testing.T, sim *banksim.Sim) {
	t.Helper()
	if err := sim.ClearFaults(); err != nil {
		t.Fatal(err)
	}
}

func TestFaultLatency(t *testing.T) {
	sim, b := start(t, banksim.Config{})

	t.Run("DelaysAnswers", func(t *testing.T) {
		setFaults(t, sim, "", banksim.Faults{Latency: &banksim.Latency{Fixed: 40 * time.Millisecond, Jitter: 10 * time.Millisecond}})
		defer clearFaults(t, sim)
		begin := time.Now()
		wantStatus(t, b.get("/v1/health"), http.StatusOK)
		if took := time.Since(begin); took < 40*time.Millisecond {
			t.Errorf("answer took %v, want at least 40ms", took)
		}
	})
	t.Run("LiftingReleasesWaiters", func(t *testing.T) {
		setFaults(t, sim, "", banksim.Faults{Latency: &banksim.Latency{Fixed: time.Hour}})
		got := async(func() error {
			_, err := b.try(context.Background(), http.MethodPost, "/v1/authorizations", "k-slow", authBody("pay_slow", goodPAN, 100, true))
			return err
		})
		eventually(t, "the request to be in flight", func() bool { return sim.Ledger().InFlight == 1 })
		clearFaults(t, sim)
		if err := await(t, got); err != nil {
			t.Fatal(err)
		}
		if n := sim.Ledger().ChargesFor("pay_slow"); n != 1 {
			t.Errorf("charges = %d, want 1", n)
		}
	})
}

// AfterWork: the bank approves at once but answers late.
func TestFaultLatencyAfterWork(t *testing.T) {
	sim, b := start(t, banksim.Config{})
	setFaults(t, sim, "", banksim.Faults{Latency: &banksim.Latency{Fixed: time.Hour, AfterWork: true}})
	got := async(func() error {
		_, err := b.try(context.Background(), http.MethodPost, "/v1/authorizations", "k-late", authBody("pay_late", goodPAN, 100, true))
		return err
	})
	eventually(t, "the charge to be made before the answer", func() bool { return sim.Ledger().ChargesFor("pay_late") == 1 })
	clearFaults(t, sim)
	if err := await(t, got); err != nil {
		t.Fatal(err)
	}
	if n := sim.Ledger().ChargesFor("pay_late"); n != 1 {
		t.Errorf("charges = %d, want 1", n)
	}
}

func TestFaultError(t *testing.T) {
	sim, b := start(t, banksim.Config{})
	setFaults(t, sim, "", banksim.Faults{Error: &banksim.Fault{Next: 2}})
	body := authBody("pay_err", goodPAN, 100, true)

	wantError(t, b.post("/v1/authorizations", "k-err", body), http.StatusInternalServerError, "internal_error")
	wantError(t, b.post("/v1/authorizations", "k-err", body), http.StatusInternalServerError, "internal_error")
	if n := len(sim.Ledger().Authorizations); n != 0 {
		t.Fatalf("a 500 did work: %d authorizations", n)
	}
	// The window of two requests is spent: the retry does the work, fresh.
	r := b.post("/v1/authorizations", "k-err", body)
	wantStatus(t, r, http.StatusOK)
	if r.header.Get("Idempotent-Replayed") != "" {
		t.Error("the answer after the 500s is a replay")
	}
	if n := sim.Ledger().ChargesFor("pay_err"); n != 1 {
		t.Errorf("charges = %d, want 1", n)
	}
}

func TestFaultProbability(t *testing.T) {
	sim, b := start(t, banksim.Config{})
	setFaults(t, sim, "", banksim.Faults{Error: &banksim.Fault{Probability: 0.5}})
	counts := map[int]int{}
	for range 200 {
		counts[b.get("/v1/health").status]++
	}
	if counts[http.StatusOK] == 0 || counts[http.StatusInternalServerError] == 0 || len(counts) != 2 {
		t.Errorf("answers with a 50%% error rate: %v", counts)
	}
}

func TestFaultNotProcessed(t *testing.T) {
	sim, b := start(t, banksim.Config{})
	setFaults(t, sim, "", banksim.Faults{NotProcessed: &banksim.Fault{}})
	wantError(t, b.post("/v1/authorizations", "k-np", authBody("pay_np", goodPAN, 100, true)), http.StatusServiceUnavailable, "not_processed")
	if n := len(sim.Ledger().Authorizations); n != 0 {
		t.Errorf("not_processed did work: %d authorizations", n)
	}
}

func TestFaultRateLimit(t *testing.T) {
	clk := newClock(day0)
	sim, b := start(t, banksim.Config{Now: clk.Now})
	setFaults(t, sim, "", banksim.Faults{RateLimit: &banksim.RateLimit{PerSecond: 2, RetryAfter: 3 * time.Second}})

	for range 2 {
		wantStatus(t, b.get("/v1/authorizations?reference=r"), http.StatusOK)
	}
	r := b.get("/v1/authorizations?reference=r")
	wantError(t, r, http.StatusTooManyRequests, "rate_limited")
	if got := r.header.Get("Retry-After"); got != "3" {
		t.Errorf("Retry-After = %q, want 3", got)
	}
	wantStatus(t, b.get("/v1/health"), http.StatusOK) // never rate limited

	clk.Set(day0.Add(time.Second))
	wantStatus(t, b.get("/v1/authorizations?reference=r"), http.StatusOK)
}

func TestFaultBlackhole(t *testing.T) {
	sim, b := start(t, banksim.Config{})
	setFaults(t, sim, "", banksim.Faults{Blackhole: &banksim.Fault{}})

	t.Run("ClientGivesUp", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := b.try(ctx, http.MethodPost, "/v1/authorizations", "k-bh", authBody("pay_bh", goodPAN, 100, true))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want a deadline", err)
		}
		if n := len(sim.Ledger().Authorizations); n != 0 {
			t.Errorf("a blackholed request did work: %d authorizations", n)
		}
	})
	t.Run("LiftingReleases", func(t *testing.T) {
		got := async(func() replyOrErr {
			r, err := b.try(context.Background(), http.MethodGet, "/v1/health", "", nil)
			return replyOrErr{r, err}
		})
		eventually(t, "the request to arrive", func() bool { return sim.Ledger().Calls(b.url, banksim.EndpointHealth) == 1 })
		clearFaults(t, sim)
		r := await(t, got)
		if r.err != nil {
			t.Fatal(r.err)
		}
		wantStatus(t, r.reply, http.StatusOK)
	})
	t.Run("CloseReleases", func(t *testing.T) {
		sim, b := start(t, banksim.Config{})
		setFaults(t, sim, "", banksim.Faults{Blackhole: &banksim.Fault{}})
		got := async(func() error {
			_, err := b.try(context.Background(), http.MethodGet, "/v1/health", "", nil)
			return err
		})
		eventually(t, "the request to arrive", func() bool { return sim.Ledger().Calls("", "") == 1 })
		closed := async(sim.Close)
		if err := await(t, closed); err != nil {
			t.Errorf("Close: %v", err)
		}
		if err := await(t, got); err == nil {
			t.Error("a blackholed request was answered at Close")
		}
	})
}

func TestFaultDropAfterApply(t *testing.T) {
	sim, b := start(t, banksim.Config{})
	setFaults(t, sim, "", banksim.Faults{DropAfterApply: &banksim.Fault{Next: 1}})
	body := authBody("pay_drop", goodPAN, 100, true)

	if _, err := b.try(context.Background(), http.MethodPost, "/v1/authorizations", "k-drop", body); err == nil {
		t.Fatal("the dropped request got an answer")
	}
	l := sim.Ledger()
	if len(l.Authorizations) != 1 || l.ChargesFor("pay_drop") != 1 {
		t.Fatalf("the work was not applied before the drop: %+v", l.Authorizations)
	}
	r := b.post("/v1/authorizations", "k-drop", body)
	wantStatus(t, r, http.StatusOK)
	if r.header.Get("Idempotent-Replayed") != "true" || r.auth(t).ID != l.Authorizations[0].ID {
		t.Errorf("retry = %s, want the recorded answer replayed", r.body)
	}
}

func TestFaultErrorAfterApply(t *testing.T) {
	sim, b := start(t, banksim.Config{})
	setFaults(t, sim, "", banksim.Faults{ErrorAfterApply: &banksim.Fault{Next: 1}})
	body := authBody("pay_kept500", goodPAN, 100, true)

	wantError(t, b.post("/v1/authorizations", "k-kept500", body), http.StatusInternalServerError, "internal_error")
	if n := sim.Ledger().ChargesFor("pay_kept500"); n != 1 {
		t.Fatalf("charges = %d, want the work done once", n)
	}
	// The window is spent, yet the key keeps its 500.
	r := b.post("/v1/authorizations", "k-kept500", body)
	wantError(t, r, http.StatusInternalServerError, "internal_error")
	if r.header.Get("Idempotent-Replayed") != "true" {
		t.Error("the repeat is not a replay")
	}
	if l := b.get("/v1/authorizations?reference=pay_kept500").list(t); len(l) != 1 || l[0].Status != "approved" {
		t.Errorf("lookup = %+v, want the approval", l)
	}
}

func TestFaultRefuse(t *testing.T) {
	sim, b := start(t, banksim.Config{})
	wantStatus(t, b.get("/v1/health"), http.StatusOK) // leaves a keep-alive connection
	setFaults(t, sim, b.url, banksim.Faults{Refuse: true})

	_, err := b.try(context.Background(), http.MethodGet, "/v1/health", "", nil)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("err = %v, want connection refused", err)
	}
	clearFaults(t, sim)
	wantStatus(t, b.get("/v1/health"), http.StatusOK) // the same URL again
}

func TestFaultUnauthorized(t *testing.T) {
	sim, b := start(t, banksim.Config{})
	setFaults(t, sim, "", banksim.Faults{Unauthorized: &banksim.Fault{}})
	wantError(t, b.get("/v1/health"), http.StatusUnauthorized, "unauthorized")
	wantError(t, b.post("/v1/authorizations", "k-401", authBody("pay_401", goodPAN, 100, true)), http.StatusUnauthorized, "unauthorized")
	if n := len(sim.Ledger().Authorizations); n != 0 {
		t.Errorf("a 401 did work: %d authorizations", n)
	}
}

func TestFaultTargets(t *testing.T) {
	sim, a := start(t, banksim.Config{})
	urlB, err := sim.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := newBank(t, urlB)

	setFaults(t, sim, a.url, banksim.Faults{NotProcessed: &banksim.Fault{}})
	wantError(t, a.get("/v1/health"), http.StatusServiceUnavailable, "not_processed")
	wantStatus(t, b.get("/v1/health"), http.StatusOK)

	setFaults(t, sim, "", banksim.Faults{Unauthorized: &banksim.Fault{}})
	wantError(t, b.get("/v1/health"), http.StatusUnauthorized, "unauthorized")

	setFaults(t, sim, "", banksim.Faults{})
	wantStatus(t, b.get("/v1/health"), http.StatusOK)
	wantError(t, a.get("/v1/health"), http.StatusServiceUnavailable, "not_processed")

	if err := sim.SetFaults("http://127.0.0.1:1", banksim.Faults{}); err == nil {
		t.Error("faults for an unknown URL were accepted")
	}
	if err := sim.SetFaults("", banksim.Faults{Error: &banksim.Fault{Probability: 2}}); err == nil {
		t.Error("a probability of 2 was accepted")
	}
}
