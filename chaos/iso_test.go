package chaos

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// approved counts the switch's approved, not reversed authorizations.
func (l ledger) approved() int {
	n := 0
	for _, a := range l.Authorizations {
		if a.Status == "approved" {
			n++
		}
	}
	return n
}

// waitSignedOn waits until the store's ISO 8583 link to b is up: the
// switch has seen the sign-on.
func waitSignedOn(t *testing.T, b *bank) {
	t.Helper()
	waitFor(t, b.name+"'s sign-on", 15*time.Second, func() bool {
		for _, u := range b.urls {
			if b.ledger(t).Requests[u]["0800"] == 0 {
				return false
			}
		}
		return true
	})
}

// A switch goes silent mid-sale: it does the work and its answer comes
// seconds late. storepay's attempt runs out of time (outcome unknown),
// its reversal advice (0420, 68) is acknowledged, and only then does the
// sale go to the next bank. The card is charged once, there; the late
// approval is counted and changes nothing.
func TestISOSwitchSilentMidSale(t *testing.T) {
	sw := startISOBank(t, "switch-a", 1)
	b := startBank(t, "bank-b", 1)
	s := newStore(t, []gw{{bank: sw, extra: map[string]any{"max_attempts": 1, "probe_interval": "-1s"}}, {bank: b}}, nil)
	waitSignedOn(t, sw)
	sw.faults(t, "", `{"latency":{"fixed":"3s","after_work":true,"next":1}}`)
	p := s.pay(900, nil)
	if p.str("status") != "captured" || p.str("gateway") != "bank-b" {
		t.Fatalf("the sale: %s", p)
	}
	l := sw.ledger(t)
	if n := l.approved(); n != 0 {
		t.Fatalf("the switch still holds %d approvals after the reversal", n)
	}
	if n := l.calls(sw.urls[0], "0420"); n != 1 {
		t.Fatalf("the switch received %d reversal advices, want 1", n)
	}
	if n := b.ledger(t).charges()[p.str("id")]; n != 1 {
		t.Fatalf("bank-b charged the sale %d times", n)
	}
}

// The answer to an offline advice (0220) is lost after the switch did the
// work: the forwarder repeats it as a 0221 under the same RRN, answered
// with the first answer. Charged once.
func TestISOAdviceAnswerDropped(t *testing.T) {
	sw := startISOBank(t, "switch-a", 1)
	s := newStore(t, []gw{{bank: sw}}, map[string]any{"forwarding": map[string]any{"interval": "50ms", "backoff_min": "50ms"}})
	waitSignedOn(t, sw)
	sw.faults(t, "", `{"drop_after_apply":{"next":1}}`)
	p := s.pay(1200, map[string]any{"offline_behavior": "force_offline"})
	if p.str("status") != "stored" {
		t.Fatalf("force_offline: %s", p)
	}
	waitFor(t, "the advice to be forwarded", 20*time.Second, func() bool { return s.get("/v1/payments/"+p.str("id")).str("status") == "captured" })
	l := sw.ledger(t)
	if n := l.approved(); n != 1 {
		t.Fatalf("the switch holds %d approvals, want 1", n)
	}
	if l.calls(sw.urls[0], "0220") != 1 || l.calls(sw.urls[0], "0221") < 1 {
		t.Fatalf("want one 0220 and its repeat (0221): %v", l.Requests)
	}
}

// storepay is SIGKILLed while it drains a backlog of offline advices to
// the switch. After a restart every payment is forwarded: each charged
// once, none lost.
func TestISOKilledDuringAdviceDrain(t *testing.T) {
	sw := startISOBank(t, "switch-a", 1)
	s := newStore(t, []gw{{bank: sw}}, map[string]any{"forwarding": map[string]any{"interval": "50ms", "rate_per_second": 20}})
	waitSignedOn(t, sw)
	if r := s.call("PUT", "/v1/estop", s.manager, "", map[string]any{"state": "pause", "reason": "build a backlog"}); r.status != 200 {
		t.Fatalf("pause: %s", r)
	}
	const n = 20
	var ids []string
	for i := 0; i < n; i++ {
		ids = append(ids, s.pay(int64(100+i), map[string]any{"offline_behavior": "force_offline"}).str("id"))
	}
	if r := s.call("PUT", "/v1/estop", s.manager, "", map[string]any{"state": "go", "reason": "drain"}); r.status != 200 {
		t.Fatalf("go: %s", r)
	}
	waitFor(t, "a few advices to be answered", 20*time.Second, func() bool { return sw.ledger(t).approved() >= 3 })
	s.crash()
	s.start()
	waitFor(t, "every advice to be forwarded", 40*time.Second, func() bool {
		for _, id := range ids {
			if s.get("/v1/payments/"+id).str("status") != "captured" {
				return false
			}
		}
		return true
	})
	if got := sw.ledger(t).approved(); got != n {
		t.Fatalf("the switch holds %d approvals for %d payments", got, n)
	}
}

// The connection to the switch is cut with many sales in flight. Each
// sale ends decided (captured at the switch or at the next bank, or
// stored offline and forwarded later), and no card is charged twice.
func TestISOConnectionCutWithManyInFlight(t *testing.T) {
	sw := startISOBank(t, "switch-a", 1)
	b := startBank(t, "bank-b", 1)
	s := newStore(t, []gw{{bank: sw, extra: map[string]any{"attempt_timeout": "2s"}}, {bank: b}},
		map[string]any{"forwarding": map[string]any{"interval": "50ms"}})
	waitSignedOn(t, sw)
	sw.faults(t, "", `{"latency":{"fixed":"500ms"}}`)
	const n = 12
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		order := s.order(int64(500 + i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := s.do("POST", "/v1/orders/"+order+"/payments", s.terminal, fmt.Sprintf("cut-%d", i), card(int64(500+i), nil))
			if err == nil && r.status == 201 {
				ids[i] = r.str("id")
			}
		}()
	}
	// Cut every connection while the sales are held by the latency.
	waitFor(t, "the sales to reach the switch", 10*time.Second, func() bool { return sw.ledger(t).calls(sw.urls[0], "0200") >= n })
	sw.faults(t, "", `{"refuse":true}`)
	wg.Wait()
	sw.clear(t)
	for i, id := range ids {
		if id == "" {
			t.Fatalf("sale %d got no answer", i)
		}
	}
	waitFor(t, "every sale to be decided and forwarded", 40*time.Second, func() bool {
		for _, id := range ids {
			if st := s.get("/v1/payments/" + id).str("status"); st != "captured" && st != "declined" {
				return false
			}
		}
		return true
	})
	atSwitch, atB := sw.ledger(t).approved(), 0
	for _, id := range ids {
		atB += b.ledger(t).charges()[id]
	}
	captured := 0
	for _, id := range ids {
		p := s.get("/v1/payments/" + id)
		if p.str("status") == "captured" {
			captured++
		}
		if p.str("status") == "declined" && b.ledger(t).charges()[id] != 0 {
			t.Errorf("payment %s declined but charged at bank-b", id)
		}
	}
	if atSwitch+atB != captured {
		t.Fatalf("%d captured, but the switch holds %d approvals and bank-b %d charges", captured, atSwitch, atB)
	}
}
