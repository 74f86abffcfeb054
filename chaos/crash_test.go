package chaos

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// storepay is SIGKILLed after the bank approved a payment and before
// storepay committed the outcome. After a restart the payment is resolved
// once: captured, charged exactly once at the bank, and the terminal's
// retry with the same Idempotency-Key gets that answer.
func TestCrashBetweenApprovalAndCommit(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := newStore(t, []gw{{bank: a, extra: map[string]any{"attempt_timeout": "20s"}}}, nil)
	order := s.order(900)
	// The bank approves at once but answers only after 30s.
	a.faults(t, "", `{"latency":{"fixed":"30s","after_work":true}}`)
	key := "crash-pay-1"
	go s.do("POST", "/v1/orders/"+order+"/payments", s.terminal, key, card(900, nil))
	waitFor(t, "the bank to approve", 10*time.Second, func() bool { return len(a.ledger(t).charges()) == 1 })
	s.crash()
	a.clear(t)

	s.start()
	var pid string
	waitFor(t, "the recovery pass to resolve the payment", 20*time.Second, func() bool {
		d := s.get("/v1/payments?terminal_id=lane-3").body["data"].([]any)
		if len(d) != 1 {
			return false
		}
		p := d[0].(map[string]any)
		pid = p["id"].(string)
		return p["status"] == "captured"
	})
	if n := a.ledger(t).charges()[pid]; n != 1 {
		t.Fatalf("bank charged the payment %d times", n)
	}
	r := s.call("POST", "/v1/orders/"+order+"/payments", s.terminal, key, card(900, nil))
	if r.status != 201 || r.str("id") != pid || r.str("status") != "captured" {
		t.Fatalf("the terminal's retry after the crash: %s", r)
	}
	if o := s.get("/v1/orders/" + order); o.str("status") != "paid" {
		t.Fatalf("order after recovery: %s", o)
	}
	if n := a.ledger(t).charges()[pid]; n != 1 {
		t.Fatalf("bank charged the payment %d times after the retry", n)
	}
}

// storepay is SIGKILLed again and again at random instants while
// terminals keep paying. Afterwards every terminal repeats what it never
// heard an answer to (same Idempotency-Key, as a real terminal does), and
// storepay's books must match the bank's exactly: every captured payment
// charged once, nothing else charged, every acknowledged answer kept.
func TestCrashLoopLosesNothing(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := newStore(t, []gw{{bank: a}}, nil)
	type attempt struct {
		order, key string
		body       map[string]any
		answer     resp // zero if the terminal never heard one
	}
	var mu sync.Mutex
	var attempts []*attempt
	for round := 0; round < 5; round++ {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					o, err := s.do("POST", "/v1/orders", s.terminal, fmt.Sprintf("o-%d-%d-%d", round, w, i),
						map[string]any{"channel": "walk_in", "currency": "USD", "lines": []map[string]any{{"sku": "X", "quantity": 1, "unit_amount": 250}}})
					if err != nil || o.status != 201 {
						continue
					}
					at := &attempt{order: o.str("id"), key: fmt.Sprintf("p-%d-%d-%d", round, w, i), body: card(250, nil)}
					if r, err := s.do("POST", "/v1/orders/"+at.order+"/payments", s.terminal, at.key, at.body); err == nil {
						at.answer = r
					}
					mu.Lock()
					attempts = append(attempts, at)
					mu.Unlock()
				}
			}()
		}
		time.Sleep(time.Duration(150+rand.IntN(400)) * time.Millisecond)
		s.crash()
		close(stop)
		wg.Wait()
		s.start()
	}
	// Terminals repeat what they never heard.
	unheard := 0
	for _, at := range attempts {
		if at.answer.status == 0 {
			unheard++
		}
		// A 409 idempotency_key_in_use says the new process is still
		// resuming the payment (its resolver holds it): the contract's
		// "retry shortly", as a terminal does.
		r := s.call("POST", "/v1/orders/"+at.order+"/payments", s.terminal, at.key, at.body)
		for deadline := time.Now().Add(30 * time.Second); r.status == 409 && r.str("code") == "idempotency_key_in_use" && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond) // the terminal's retry interval
			r = s.call("POST", "/v1/orders/"+at.order+"/payments", s.terminal, at.key, at.body)
		}
		if at.answer.status != 0 && (r.status != at.answer.status || r.str("id") != at.answer.str("id") || r.str("status") != at.answer.str("status")) {
			t.Fatalf("acknowledged answer changed after crashes: first %s, now %s", at.answer, r)
		}
		if r.status != 201 {
			t.Fatalf("retry after crashes: %s", r)
		}
		at.answer = r
	}
	waitFor(t, "no payment left pending", 30*time.Second, func() bool {
		return len(s.get("/v1/payments?status=pending&limit=1000").body["data"].([]any)) == 0
	})
	charges := a.ledger(t).charges()
	captured := 0
	for _, at := range attempts {
		id := at.answer.str("id")
		p := s.get("/v1/payments/" + id)
		switch p.str("status") {
		case "captured":
			captured++
			if charges[id] != 1 {
				t.Fatalf("captured payment %s charged %d times at the bank", id, charges[id])
			}
		default:
			if charges[id] != 0 {
				t.Fatalf("payment %s is %s in storepay but charged %d times at the bank", id, p.str("status"), charges[id])
			}
		}
		delete(charges, id)
	}
	for ref, n := range charges {
		t.Fatalf("the bank charged %s %d times, a payment no terminal knows", ref, n)
	}
	if captured == 0 {
		t.Fatal("no payment was captured: the test proved nothing")
	}
	t.Logf("%d payments over 5 crashes, %d never answered before a crash, %d captured", len(attempts), unheard, captured)
}

// SIGTERM while a payment waits for a slow bank: storepay finishes the
// payment, answers the terminal, and only then exits 0.
func TestGracefulShutdownFinishesPaymentsInFlight(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := newStore(t, []gw{{bank: a, extra: map[string]any{"attempt_timeout": "10s"}}}, nil)
	order := s.order(900)
	a.faults(t, "", `{"latency":{"fixed":"1500ms"}}`)
	got := make(chan resp, 1)
	go func() {
		got <- s.call("POST", "/v1/orders/"+order+"/payments", s.terminal, "graceful-1", card(900, nil))
	}()
	waitFor(t, "the payment to reach the bank", 10*time.Second, func() bool {
		return a.ledger(t).calls(a.urls[0], "POST /v1/authorizations") == 1
	})
	s.proc.stop(t) // SIGTERM, waits for exit 0
	r := <-got
	if r.status != 201 || r.str("status") != "captured" {
		t.Fatalf("payment in flight at SIGTERM: %s", r)
	}
	if n := a.ledger(t).charges()[r.str("id")]; n != 1 {
		t.Fatalf("charged %d times", n)
	}
}
