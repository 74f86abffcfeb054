package gameday

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// terminal is a till: it retries a request whose answer it lost (a
// transport error while storepay was down, a 409 still running, a 503)
// under the same Idempotency-Key until an answer comes or retryFor ends.
type terminal struct {
	s      *store
	client *http.Client
	seq    atomic.Int64
	// counters for the report
	requests, repeats atomic.Int64
}

const retryFor = 45 * time.Second

type answer struct {
	status int
	body   map[string]any
}

func (a answer) str(k string) string { v, _ := a.body[k].(string); return v }

func (t *terminal) key() string { return fmt.Sprintf("gd-%d-%d", time.Now().UnixNano(), t.seq.Add(1)) }

// do sends one request, repeating it under the same key while its answer
// is lost. It gives up (returning the last error) after retryFor.
func (t *terminal) do(ctx context.Context, method, path, token, key string, body any) (answer, error) {
	var raw []byte
	if body != nil {
		raw, _ = json.Marshal(body)
	}
	deadline := time.Now().Add(retryFor)
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			t.repeats.Add(1)
		}
		t.requests.Add(1)
		a, err := t.once(ctx, method, path, token, key, raw)
		lost := err != nil || a.status == http.StatusConflict && a.str("code") == "idempotency_key_in_use" ||
			a.status == http.StatusServiceUnavailable || a.status >= 500
		if !lost || key == "" && err == nil {
			return a, err
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			if err == nil {
				err = fmt.Errorf("%s %s: %d %v", method, path, a.status, a.body)
			}
			return a, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (t *terminal) once(ctx context.Context, method, path, token, key string, raw []byte) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, method, t.s.url+path, bytes.NewReader(raw))
	if err != nil {
		return answer{}, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	res, err := t.client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	a := answer{status: res.StatusCode}
	json.Unmarshal(b, &a.body)
	return a, nil
}

func (t *terminal) post(ctx context.Context, path string, body any) (answer, error) {
	return t.do(ctx, http.MethodPost, path, t.s.terminal, t.key(), body)
}

// tally counts what the customers did and saw.
type tally struct {
	mu        sync.Mutex
	customers int
	actions   map[string]int // what was asked: card, cash, split, tip, preauth, refund, cancel, repeat
	outcomes  map[string]int // payment answers by status or error code
	failures  []string       // requests that got no answer at all
}

func (t *tally) add(m map[string]int, k string) {
	t.mu.Lock()
	m[k]++
	t.mu.Unlock()
}

func (t *tally) fail(what string, err error) {
	t.mu.Lock()
	if len(t.failures) < 20 {
		t.failures = append(t.failures, fmt.Sprintf("%s: %v", what, err))
	}
	t.outcomes["no_answer"]++
	t.mu.Unlock()
}

var cards = []string{"4242424242424242", "5555555555554444", "4000056655665556", "378282246310005"}

// customer runs one customer's visit: an order and how it is paid, and
// perhaps a refund or a cancel.
func (t *terminal) customer(ctx context.Context, rng *rand.Rand, mix Mix, tl *tally) {
	amount := int64(300 + rng.IntN(8000)) // 3.00 .. 83.00, mostly under the floor limit
	o, err := t.post(ctx, "/v1/orders", map[string]any{"channel": "walk_in", "currency": "USD",
		"lines": []map[string]any{{"sku": "ITEM", "description": "item", "quantity": 1, "unit_amount": amount}}})
	if err != nil || o.status != http.StatusCreated {
		tl.fail("order", fmt.Errorf("%v %d %v", err, o.status, o.body))
		return
	}
	order := o.str("id")
	card := func(amt int64, extra map[string]any) answer {
		body := map[string]any{"method": "card", "amount": amt, "tip_amount": 0, "capture": true,
			"card": map[string]any{"pan": cards[rng.IntN(len(cards))], "exp_month": 12, "exp_year": 2030}}
		for k, v := range extra {
			body[k] = v
		}
		key := t.key()
		a, err := t.do(ctx, http.MethodPost, "/v1/orders/"+order+"/payments", t.s.terminal, key, body)
		if err != nil {
			tl.fail("card payment", err)
			return answer{}
		}
		if rng.Float64() < mix.Repeat {
			// The terminal lost the answer and sends the request again:
			// the same answer must come back, nothing charged twice.
			tl.add(tl.actions, "repeat")
			b, err := t.do(ctx, http.MethodPost, "/v1/orders/"+order+"/payments", t.s.terminal, key, body)
			if err == nil && b.str("id") != a.str("id") {
				tl.fail("repeat", fmt.Errorf("a repeat under the same key answered payment %q, the first %q", b.str("id"), a.str("id")))
			}
		}
		outcome := a.str("status")
		if a.status >= 400 {
			outcome = a.str("code")
		}
		tl.add(tl.outcomes, outcome)
		return a
	}
	r := rng.Float64()
	var paid answer
	switch {
	case r < mix.Cash:
		tl.add(tl.actions, "cash")
		a, err := t.post(ctx, "/v1/orders/"+order+"/payments", map[string]any{"method": "cash", "amount": amount})
		if err != nil {
			tl.fail("cash", err)
			return
		}
		tl.add(tl.outcomes, "cash_"+a.str("status"))
		return
	case r < mix.Cash+mix.Split:
		tl.add(tl.actions, "split")
		part := amount / 2
		if _, err := t.post(ctx, "/v1/orders/"+order+"/payments", map[string]any{"method": "cash", "amount": part}); err != nil {
			tl.fail("split cash", err)
			return
		}
		paid = card(amount-part, nil)
	case r < mix.Cash+mix.Split+mix.PreAuth:
		tl.add(tl.actions, "preauth")
		paid = card(amount, map[string]any{"capture": false})
		if paid.str("status") == "authorized" {
			a, err := t.post(ctx, "/v1/payments/"+paid.str("id")+"/capture", map[string]any{"amount": amount})
			if err != nil {
				tl.fail("capture", err)
			} else {
				tl.add(tl.outcomes, "capture_"+fmt.Sprint(a.status))
			}
		}
	default:
		extra := map[string]any{}
		if rng.Float64() < mix.Tip {
			tl.add(tl.actions, "tip")
			extra["tip_amount"] = int64(50 + rng.IntN(500))
		} else {
			tl.add(tl.actions, "card")
		}
		paid = card(amount, extra)
	}
	if paid.str("id") == "" {
		return
	}
	switch r := rng.Float64(); {
	case r < mix.Refund && paid.str("status") == "captured":
		tl.add(tl.actions, "refund")
		a, err := t.post(ctx, "/v1/payments/"+paid.str("id")+"/refunds", map[string]any{"amount": int64(100)})
		if err != nil {
			tl.fail("refund", err)
		} else {
			tl.add(tl.outcomes, "refund_"+fmt.Sprint(a.status))
		}
	case r < mix.Refund+mix.Cancel:
		tl.add(tl.actions, "cancel")
		a, err := t.post(ctx, "/v1/orders/"+order+"/cancel", nil)
		if err != nil {
			tl.fail("cancel", err)
		} else {
			tl.add(tl.outcomes, "cancel_"+fmt.Sprint(a.status))
		}
	}
}
