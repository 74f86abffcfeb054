package chaos

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"storepay/gateway"
)

// luhn completes a 15-digit prefix into a valid card number.
func luhn(prefix string) string { return gateway.WithCheckDigit(prefix) }

func cardPAN(pan string, amount, tip int64, extra map[string]any) map[string]any {
	b := map[string]any{"method": "card", "amount": amount, "tip_amount": tip, "capture": true,
		"card": map[string]any{"pan": pan, "exp_month": 12, "exp_year": 2030}}
	for k, v := range extra {
		b[k] = v
	}
	return b
}

func safConfig(floor, total int64, hot string) map[string]any {
	return map[string]any{
		"offline": map[string]any{"floor_limit": floor, "total_limit": total, "max_age": "72h",
			"velocity_count": 3, "velocity_amount": 3 * floor, "hot_cards": []string{hot}},
		"forwarding": map[string]any{"interval": "50ms", "backoff_min": "20ms", "backoff_max": "500ms",
			"concurrency": 4, "rate_per_second": 200},
	}
}

// Every bank is down while 16 terminals sell 1,000 payments of mixed
// amounts. Exactly the payments the offline rules allow are stored; when
// the banks return, every stored payment is forwarded and charged once,
// and the declines after forwarding surface.
func TestOfflineEpisodeThenDrain(t *testing.T) {
	a, b := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	const floor, total = 5000, 1_200_000
	hot := luhn("555555000000444")
	s := newStore(t, []gw{{bank: a}, {bank: b}}, safConfig(floor, total, hot[:6]+"******"+hot[12:]))
	a.faults(t, "", `{"refuse":true}`)
	b.faults(t, "", `{"refuse":true}`)

	type sale struct {
		pan         string
		amount, tip int64
		payment     resp
	}
	velocityCard := luhn("411111000000999")
	var sales []*sale
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 1000; i++ {
		sl := &sale{pan: luhn(fmt.Sprintf("4%014d", 100000+i)), amount: 100 + rng.Int64N(6000), tip: rng.Int64N(300)}
		switch {
		case i%97 == 0:
			sl.pan = hot
		case i%53 == 0:
			sl.pan = "4000000000000002" // the bank will decline it after forwarding
		case i < 6:
			sl.pan = velocityCard
			sl.amount, sl.tip = 500, 0
		}
		sales = append(sales, sl)
	}
	var wg sync.WaitGroup
	next := make(chan *sale)
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sl := range next {
				sl.payment = s.post("/v1/orders/"+s.order(sl.amount)+"/payments", cardPAN(sl.pan, sl.amount, sl.tip, nil))
			}
		}()
	}
	for _, sl := range sales {
		next <- sl
	}
	close(next)
	wg.Wait()

	var storedSum int64
	storedByCard := map[string]int{}
	for _, sl := range sales {
		if sl.payment.status != 201 {
			t.Fatalf("payment refused: %s", sl.payment)
		}
		if sl.payment.str("status") == "stored" {
			storedSum += sl.amount + sl.tip
			storedByCard[sl.pan]++
		}
	}
	stored := 0
	for _, sl := range sales {
		p, charge := sl.payment, sl.amount+sl.tip
		switch p.str("status") {
		case "stored":
			stored++
			if charge > floor {
				t.Fatalf("stored over the floor limit: %s", p)
			}
			if sl.pan == hot {
				t.Fatalf("stored a hot card: %s", p)
			}
		case "declined":
			switch code := p.str("decline_code"); code {
			case "offline_limit_exceeded":
				if charge <= floor && storedSum+charge <= total {
					t.Fatalf("declined %d although it fitted both limits (stored %d of %d): %s", charge, storedSum, total, p)
				}
			case "offline_card_blocked":
				if sl.pan != hot {
					t.Fatalf("blocked a card that is not hot: %s", p)
				}
			case "offline_velocity_exceeded":
				if storedByCard[sl.pan] < 3 {
					t.Fatalf("velocity decline with only %d stored for the card: %s", storedByCard[sl.pan], p)
				}
			default:
				t.Fatalf("unexpected decline %q: %s", code, p)
			}
		default:
			t.Fatalf("unexpected outcome: %s", p)
		}
	}
	if storedSum > total {
		t.Fatalf("the queue holds %d, over its total limit %d", storedSum, total)
	}
	if storedByCard[velocityCard] != 3 || storedByCard[hot] != 0 {
		t.Fatalf("velocity card stored %d times, hot card %d", storedByCard[velocityCard], storedByCard[hot])
	}
	if stored < 300 {
		t.Fatalf("only %d stored: the scenario does not exercise the queue", stored)
	}
	st := s.call("GET", "/v1/saf/stats", s.manager, "", nil)
	if int64(st.body["outstanding_amount"].(float64)) != storedSum {
		t.Fatalf("queue stats %s, stored sum %d", st, storedSum)
	}

	// The banks come back.
	a.clear(t)
	b.clear(t)
	waitFor(t, "the queue to drain", 60*time.Second, func() bool {
		st := s.call("GET", "/v1/saf/stats", s.manager, "", nil)
		return st.body["outstanding_count"].(float64) == 0
	})
	charges := where(t, a, b)
	declinedAfter := 0
	for _, sl := range sales {
		if sl.payment.str("status") != "stored" {
			if _, ok := charges[sl.payment.str("id")]; ok {
				t.Fatalf("a payment declined offline was charged: %s", sl.payment)
			}
			continue
		}
		p := s.get("/v1/payments/" + sl.payment.str("id"))
		switch p.str("status") {
		case "captured":
			if _, ok := charges[p.str("id")]; !ok {
				t.Fatalf("captured but not charged at any bank: %s", p)
			}
		case "declined_after_forward":
			declinedAfter++
			if sl.pan != "4000000000000002" {
				t.Fatalf("unexpected decline after forward: %s", p)
			}
		default:
			t.Fatalf("after the drain: %s", p)
		}
	}
	if declinedAfter == 0 {
		t.Fatal("no decline after forward: the scenario did not exercise it")
	}
	st = s.call("GET", "/v1/saf/stats", s.manager, "", nil)
	if int(st.body["declined_after_forward"].(float64)) != declinedAfter {
		t.Fatalf("manager sees %v declines after forward, want %d", st.body["declined_after_forward"], declinedAfter)
	}
	t.Logf("%d sales, %d stored, %d declined after forward", len(sales), stored, declinedAfter)
}

// queueOffline stores n payments with forwarding paused.
func queueOffline(t *testing.T, s *store, n int) []string {
	t.Helper()
	if r := s.call("PUT", "/v1/estop", s.manager, "", map[string]any{"state": "pause", "reason": "fill"}); r.status != 200 {
		t.Fatalf("pause: %s", r)
	}
	ids := make([]string, n)
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 8 {
				p := s.post("/v1/orders/"+s.order(300)+"/payments", cardPAN(luhn(fmt.Sprintf("4%014d", 500000+i)), 300, 0,
					map[string]any{"offline_behavior": "force_offline"}))
				if p.str("status") != "stored" {
					t.Errorf("queue: %s", p)
				}
				ids[i] = p.str("id")
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return ids
}

// An emergency stop in the middle of a drain halts it within the calls
// already in flight; a restart keeps the stop; go finishes the drain.
func TestEmergencyStopMidDrain(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	cfg := safConfig(5000, 10_000_000, "400000******0000")
	cfg["forwarding"].(map[string]any)["concurrency"] = 2
	s := newStore(t, []gw{{bank: a}}, cfg)
	ids := queueOffline(t, s, 200)
	a.faults(t, "", `{"latency":{"fixed":"40ms"}}`)
	authorizations := func() int64 { return a.ledger(t).calls(a.urls[0], "POST /v1/authorizations") }
	s.call("PUT", "/v1/estop", s.manager, "", map[string]any{"state": "go", "reason": "drain"})
	waitFor(t, "the drain to start", 10*time.Second, func() bool { return authorizations() >= 20 })
	if r := s.call("PUT", "/v1/estop", s.manager, "", map[string]any{"state": "pause", "reason": "suspicious"}); r.status != 200 {
		t.Fatalf("pause: %s", r)
	}
	atPause := authorizations()
	time.Sleep(500 * time.Millisecond) // many forwarder scans (50ms) and bank latencies (40ms)
	if n := authorizations(); n != atPause {
		t.Fatalf("%d authorizations reached the bank after the pause", n-atPause)
	}
	if l := a.ledger(t); len(l.charges()) >= len(ids) {
		t.Fatal("the drain finished before the pause: the test proved nothing")
	}

	s.crash()
	s.start()
	if e := s.call("GET", "/v1/estop", s.manager, "", nil); e.str("state") != "pause" || e.str("reason") != "suspicious" {
		t.Fatalf("after a restart the emergency stop is %s", e)
	}
	time.Sleep(300 * time.Millisecond)
	if n := authorizations(); n != atPause {
		t.Fatalf("%d authorizations after a restart under pause", n-atPause)
	}

	// stop cancels what is in flight.
	a.faults(t, "", `{"latency":{"fixed":"10s"}}`)
	s.call("PUT", "/v1/estop", s.manager, "", map[string]any{"state": "go"})
	waitFor(t, "a slow forward in flight", 10*time.Second, func() bool { return authorizations() > atPause })
	t0 := time.Now()
	s.call("PUT", "/v1/estop", s.manager, "", map[string]any{"state": "stop", "reason": "fraud"})
	waitFor(t, "the forwards in flight to be cancelled", 5*time.Second, func() bool {
		return len(s.call("GET", "/v1/saf?status=forwarding", s.manager, "", nil).body["data"].([]any)) == 0
	})
	if d := time.Since(t0); d > 3*time.Second {
		t.Fatalf("stop took %s to cancel the forwards in flight", d)
	}
	stopped := authorizations()
	time.Sleep(300 * time.Millisecond)
	if n := authorizations(); n != stopped {
		t.Fatalf("%d authorizations after stop", n-stopped)
	}

	a.clear(t)
	s.call("PUT", "/v1/estop", s.manager, "", map[string]any{"state": "go", "reason": "all clear"})
	waitFor(t, "the drain to finish", 60*time.Second, func() bool {
		return s.call("GET", "/v1/saf/stats", s.manager, "", nil).body["outstanding_count"].(float64) == 0
	})
	charges := where(t, a)
	for _, id := range ids {
		if p := s.get("/v1/payments/" + id); p.str("status") != "captured" || charges[id] != "bank-a" {
			t.Fatalf("after the drain: %s (charged at %q)", p, charges[id])
		}
	}
}

// storepay is SIGKILLed again and again during a drain of hundreds of
// records. Nothing acknowledged is lost and nothing is forwarded twice:
// the bank's ledger and storepay's books agree exactly.
func TestCrashesDuringDrain(t *testing.T) {
	a, b := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	s := newStore(t, []gw{{bank: a}, {bank: b}}, safConfig(5000, 10_000_000, "400000******0000"))
	ids := queueOffline(t, s, 300)
	a.faults(t, "", `{"latency":{"fixed":"15ms","jitter":"20ms"}}`)
	b.faults(t, "", `{"latency":{"fixed":"15ms","jitter":"20ms"}}`)
	s.call("PUT", "/v1/estop", s.manager, "", map[string]any{"state": "go", "reason": "drain"})
	rng := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 6; i++ {
		time.Sleep(time.Duration(100+rng.IntN(300)) * time.Millisecond)
		s.crash()
		s.start()
	}
	waitFor(t, "the drain to finish", 60*time.Second, func() bool {
		return s.call("GET", "/v1/saf/stats", s.manager, "", nil).body["outstanding_count"].(float64) == 0
	})
	charges := where(t, a, b) // fails on any double charge
	for _, id := range ids {
		p := s.get("/v1/payments/" + id)
		if p.str("status") != "captured" {
			t.Fatalf("after crashes: %s", p)
		}
		if charges[id] != p.str("gateway") {
			t.Fatalf("%s is captured at %s in storepay but charged at %q", id, p.str("gateway"), charges[id])
		}
		delete(charges, id)
	}
	if len(charges) != 0 {
		t.Fatalf("charges no payment explains: %v", charges)
	}
}

// With the default forwarding settings, an emergency stop halts a drain
// within one call in flight per bank: once the stop is answered, at most
// one more payment per bank is charged.
func TestEmergencyStopHaltsWithinOneCallPerBank(t *testing.T) {
	a, b := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	cfg := safConfig(5000, 10_000_000, "400000******0000")
	delete(cfg["forwarding"].(map[string]any), "concurrency")
	s := newStore(t, []gw{{bank: a}, {bank: b}}, cfg)
	queueOffline(t, s, 60)
	a.faults(t, "", `{"latency":{"fixed":"100ms"}}`)
	charged := func(k *bank) int { return len(k.ledger(t).charges()) }
	s.call("PUT", "/v1/estop", s.manager, "", map[string]any{"state": "go", "reason": "drain"})
	waitFor(t, "the drain to start", 10*time.Second, func() bool { return charged(a)+charged(b) >= 3 })
	if r := s.call("PUT", "/v1/estop", s.manager, "", map[string]any{"state": "stop", "reason": "fraud"}); r.status != 200 {
		t.Fatalf("stop: %s", r)
	}
	atStop := map[*bank]int{a: charged(a), b: charged(b)}
	time.Sleep(time.Second) // ten bank latencies: anything still going would land
	for _, k := range []*bank{a, b} {
		if n := charged(k) - atStop[k]; n > 1 {
			t.Fatalf("%s charged %d payments after the stop was answered, want at most one", k.name, n)
		}
	}
	if charged(a)+charged(b) >= 60 {
		t.Fatal("the drain finished before the stop: the test proved nothing")
	}
}
