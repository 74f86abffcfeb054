package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"storepay/gateway"
)

// terminal is a store device: a lane or a handheld (role terminal), or
// the manager's back-office PC. Its script runs as an actor that survives
// storepay's crashes, as a real terminal does.
type terminal struct {
	w     *world
	name  string
	token string
	keys  int
	actor *actor
	// manager: the back office; its requests are not terminal requests
	// and are kept out of the idempotency checks.
	manager bool
}

// heard is an answer a terminal received.
type heard struct {
	status int
	body   []byte
	at     time.Time
}

// exchange is every request a terminal sent under one key and what it
// heard for each (nothing, when the answer was lost).
type exchange struct {
	device, key  string
	method, path string
	body         []byte
	answers      []heard
	first        time.Time // when the key was first sent: storepay keeps its answer 72 hours from then
}

// history is what the terminals asked and heard: the checks' view of
// what storepay promised.
type history struct {
	exchanges []*exchange
	byKey     map[string]*exchange
	orders    []*orderNote
	payments  map[string]*paymentNote
}

type orderNote struct {
	id        string
	total     int64
	cancelled bool // a cancel was answered 200
	cancelAsk bool
	payments  []string
}

type paymentNote struct {
	id       string
	orderID  string
	method   string
	told     string // the last status a 2xx answer told
	toldAt   time.Time
	capture  bool
	voidAsk  bool
	refunds  map[string]int64 // refund requests by key: amount
	captures map[string]int64 // capture requests by key: amount + tip
}

func newHistory() *history {
	return &history{byKey: map[string]*exchange{}, payments: map[string]*paymentNote{}}
}

// answer is what a terminal makes of a request: the answer heard, or
// none (lost, timed out, or storepay died).
type answer struct {
	status int
	body   []byte
	ok     bool
}

func (a answer) str(field string) string {
	var v map[string]any
	if json.Unmarshal(a.body, &v) != nil {
		return ""
	}
	s, _ := v[field].(string)
	return s
}

func (a answer) num(field string) int64 {
	var v map[string]any
	if json.Unmarshal(a.body, &v) != nil {
		return 0
	}
	f, _ := v[field].(float64)
	return int64(f)
}

// terminalTimeout is how long a terminal waits for an answer before it
// treats the request as lost and repeats it under the same key.
const terminalTimeout = 40 * time.Second

// send makes one HTTP request to storepay, run as its own actor in the
// current incarnation, and waits for the answer or the timeout. The
// answer is lost when storepay dies before it is written, or when the
// seed loses it on the way.
func (t *terminal) send(method, path, key string, body []byte) answer {
	w := t.w
	inc := w.inc
	ex := w.history.byKey[t.name+"\x00"+key]
	if key != "" && ex == nil && !t.manager {
		ex = &exchange{device: t.name, key: key, method: method, path: path, body: body, first: w.now()}
		w.history.exchanges = append(w.history.exchanges, ex)
		w.history.byKey[t.name+"\x00"+key] = ex
	}
	var rec *httptest.ResponseRecorder
	var delivered bool
	var answeredAt time.Time
	reqID := fmt.Sprintf("req-%s-%d", t.name, w.sched.next+1)
	req := w.sched.spawn(t.name+" "+method+" "+path, inc, false, func() {
		w.sched.cur.request = true
		r := httptest.NewRequest(method, path, bytes.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+t.token)
		r.Header.Set("X-Request-Id", reqID)
		if body != nil {
			r.Header.Set("Content-Type", "application/json")
		}
		if key != "" {
			r.Header.Set("Idempotency-Key", key)
		}
		rec = httptest.NewRecorder()
		inc.http.ServeHTTP(rec, r)
		delivered, answeredAt = !inc.dead.Load(), w.now()
	})
	deadline := w.now().Add(terminalTimeout)
	t.wait("answer to "+method+" "+path, func() bool { return req.ended || !w.now().Before(deadline) })
	lost := !req.ended || !delivered || (!w.healing && w.chance(0.04))
	if lost {
		w.logf("%s %s %s (key %s): no answer", t.name, method, path, key)
		return answer{}
	}
	a := answer{status: rec.Code, body: rec.Body.Bytes(), ok: true}
	if ex != nil {
		ex.answers = append(ex.answers, heard{status: a.status, body: a.body, at: answeredAt})
	}
	if method != http.MethodGet {
		w.logf("%s %s %s (key %s): %d %s", t.name, method, path, key, a.status, brief(a))
	}
	return a
}

func brief(a answer) string {
	if s := a.str("code"); s != "" {
		return s
	}
	if s := a.str("status"); s != "" {
		return a.str("id") + " " + s
	}
	return ""
}

// wait parks the terminal's script until ready says it may go on.
func (t *terminal) wait(what string, ready func() bool) {
	a := t.actor
	a.ready = ready
	t.w.sched.park(a, what)
}

// sleep parks the script for d of the world's time.
func (t *terminal) sleep(d time.Duration) {
	a := t.actor
	a.until = t.w.now().Add(d)
	t.w.sched.park(a, "sleeping")
	a.until = time.Time{}
}

// call sends a POST under a new key and repeats it under the same key,
// as a terminal does, while the answer is lost or says to retry. It
// returns the last answer and the key.
func (t *terminal) call(path string, v any) (answer, string) {
	t.keys++
	key := fmt.Sprintf("%s-k%d", t.name, t.keys)
	return t.repeat(path, key, v), key
}

func (t *terminal) repeat(path, key string, v any) answer {
	body, _ := json.Marshal(v)
	var a answer
	for attempt := 0; attempt < 8; attempt++ {
		a = t.send(http.MethodPost, path, key, body)
		if a.ok && !retryable(a) {
			return a
		}
		t.sleep(time.Duration(1+t.w.intn(20)) * time.Second << min(attempt, 4))
	}
	return a
}

// retryable says a terminal should repeat the request under its key.
func retryable(a answer) bool {
	switch {
	case a.status >= 500:
		return true
	case a.status == http.StatusConflict:
		c := a.str("code")
		return c == "idempotency_key_in_use" || c == "payment_in_progress"
	}
	return false
}

func (t *terminal) get(path string) answer {
	for attempt := 0; attempt < 4; attempt++ {
		if a := t.send(http.MethodGet, path, "", nil); a.ok && a.status < 500 {
			return a
		}
		t.sleep(time.Duration(1+t.w.intn(5)) * time.Second)
	}
	return answer{}
}

// The cards of the workload: ordinary cards (approved), and the test
// cards every acquirer declines.
var declineCards = []string{"4000000000000002", "4000000000009995", "4000000000000069", "4000000000009979"}

func (t *terminal) card() map[string]any {
	pan := gateway.WithCheckDigit(fmt.Sprintf("4%014d", t.w.int64n(1e14)))
	if t.w.chance(0.06) {
		pan = declineCards[t.w.intn(len(declineCards))]
	}
	return map[string]any{"pan": pan, "exp_month": 12, "exp_year": 2030}
}

// run is a terminal's day: sales, and now and then an action on an
// earlier sale (a refund, a void, a cancel, a capture, a delivery, a
// terminal replaying requests after a reboot, or finishing an order
// another terminal left).
func (t *terminal) run() {
	w := t.w
	for !w.stopping {
		switch n := w.intn(100); {
		case n < 60:
			t.sale()
		default:
			t.followUp()
		}
		t.sleep(time.Duration(w.intn(30)) * time.Second)
	}
}

func (t *terminal) sale() {
	w := t.w
	lines := []map[string]any{}
	var total int64
	for i := 0; i <= w.intn(3); i++ {
		q, unit := int64(1+w.intn(3)), int64(50+w.intn(4000))
		lines = append(lines, map[string]any{"sku": fmt.Sprintf("SKU-%d", w.intn(50)), "description": "thing", "quantity": q, "unit_amount": unit})
		total += q * unit
	}
	a, _ := t.call("/v1/orders", map[string]any{"channel": "walk_in", "currency": "USD", "lines": lines})
	if a.status != http.StatusCreated {
		return
	}
	o := &orderNote{id: a.str("id"), total: total}
	w.history.orders = append(w.history.orders, o)
	left := total
	for part := 0; left > 0 && part < 3; part++ {
		amount := left
		if part == 0 && w.chance(0.15) {
			amount = left / 2 // split tender
		}
		if amount <= 0 {
			break
		}
		paid := t.pay(o, amount)
		left -= paid
		if paid == 0 && w.chance(0.5) {
			break // the customer walks away
		}
	}
	if left <= 0 && w.chance(0.4) {
		t.repeat("/v1/orders/"+o.id+"/deliver", t.nextKey(), map[string]any{})
	}
}

func (t *terminal) nextKey() string {
	t.keys++
	return fmt.Sprintf("%s-k%d", t.name, t.keys)
}

// pay pays amount of o: cash, a sale, or a pre-authorization captured
// with a tip; a few ask to be kept offline or to be online only. It
// returns what the payment covers.
func (t *terminal) pay(o *orderNote, amount int64) int64 {
	w := t.w
	body := map[string]any{"method": "card", "amount": amount, "tip_amount": 0}
	kind := w.intn(100)
	switch {
	case kind < 12:
		body["method"] = "cash"
	case kind < 27:
		body["capture"] = false
		body["card"] = t.card()
	default:
		body["card"] = t.card()
		if w.chance(0.2) {
			body["tip_amount"] = int64(w.intn(300))
		}
	}
	switch n := w.intn(100); {
	case body["method"] == "cash":
	case n < 8:
		body["offline_behavior"] = "force_offline"
	case n < 13:
		body["offline_behavior"] = "require_online"
	}
	a, _ := t.call("/v1/orders/"+o.id+"/payments", body)
	if a.status != http.StatusCreated {
		return 0
	}
	p := t.note(o, a, body["method"].(string))
	switch p.told {
	case "captured", "stored":
		return amount
	case "authorized":
		if w.chance(0.8) {
			t.capture(p, amount, int64(w.intn(int(amount/5)+1)))
		}
		return amount
	}
	return 0
}

// note records what a payment answer told.
func (t *terminal) note(o *orderNote, a answer, method string) *paymentNote {
	h := t.w.history
	id := a.str("id")
	p := h.payments[id]
	if p == nil {
		p = &paymentNote{id: id, orderID: a.str("order_id"), method: method, refunds: map[string]int64{}, captures: map[string]int64{}}
		h.payments[id] = p
		if o != nil {
			o.payments = append(o.payments, id)
		}
	}
	p.told, p.toldAt = a.str("status"), t.w.now()
	return p
}

func (t *terminal) capture(p *paymentNote, amount, tip int64) {
	key := t.nextKey()
	p.captures[key] = amount + tip
	a := t.repeat("/v1/payments/"+p.id+"/capture", key, map[string]any{"amount": amount, "tip_amount": tip})
	if a.status == http.StatusOK {
		t.note(nil, a, p.method)
	}
}

// followUp acts on an earlier sale of any terminal.
func (t *terminal) followUp() {
	w := t.w
	h := w.history
	if len(h.orders) == 0 {
		return
	}
	o := h.orders[w.intn(len(h.orders))]
	switch n := w.intn(100); {
	case n < 30 && len(o.payments) > 0:
		p := h.payments[o.payments[w.intn(len(o.payments))]]
		if p.told != "captured" && p.told != "partially_refunded" {
			return
		}
		key := t.nextKey()
		amount := int64(1 + w.intn(2000))
		p.refunds[key] = amount
		if a := t.repeat("/v1/payments/"+p.id+"/refunds", key, map[string]any{"amount": amount}); a.status == http.StatusCreated {
			t.note(nil, a, p.method)
			if w.chance(0.3) {
				// The customer brings the rest back too: the order is
				// cancelled.
				o.cancelAsk = true
				if a := t.repeat("/v1/orders/"+o.id+"/cancel", t.nextKey(), map[string]any{}); a.status == http.StatusOK && a.str("status") == "cancelled" {
					o.cancelled = true
				}
			}
		}
	case n < 42 && len(o.payments) > 0:
		p := h.payments[o.payments[w.intn(len(o.payments))]]
		p.voidAsk = true
		if a := t.repeat("/v1/payments/"+p.id+"/void", t.nextKey(), map[string]any{}); a.status == http.StatusOK {
			t.note(nil, a, p.method)
		}
	case n < 55:
		o.cancelAsk = true
		if a := t.repeat("/v1/orders/"+o.id+"/cancel", t.nextKey(), map[string]any{}); a.status == http.StatusOK && a.str("status") == "cancelled" {
			o.cancelled = true
		}
	case n < 65 && len(o.payments) > 0:
		p := h.payments[o.payments[w.intn(len(o.payments))]]
		if p.told == "authorized" {
			t.capture(p, int64(1+w.intn(1000)), 0)
		}
	case n < 75:
		t.repeat("/v1/orders/"+o.id+"/deliver", t.nextKey(), map[string]any{})
	case n < 88:
		// A terminal rebooted and replays a request from its journal,
		// under its key: storepay must answer it as it did, and do
		// nothing twice.
		if len(h.exchanges) == 0 {
			return
		}
		ex := h.exchanges[w.intn(len(h.exchanges))]
		if ex.device != t.name || ex.method != http.MethodPost {
			return
		}
		var v any
		json.Unmarshal(ex.body, &v)
		w.logf("%s replays %s %s (key %s)", t.name, ex.method, ex.path, ex.key)
		t.repeat(ex.path, ex.key, v)
	default:
		// Another terminal picks the order up: what is left to pay is
		// paid.
		a := t.get("/v1/orders/" + o.id)
		if !a.ok || a.str("status") != "open" {
			return
		}
		if left := a.num("total_amount") - a.num("paid_amount"); left > 0 {
			t.pay(o, left)
		}
	}
}

// managerRun is the manager's day: now and then a look at the queue and
// the banks, and an action.
func (t *terminal) managerRun() {
	w := t.w
	for !w.stopping {
		t.sleep(time.Duration(30+w.intn(600)) * time.Second)
		if w.stopping {
			return
		}
		t.managerAction()
	}
}

func (t *terminal) managerAction() {
	w := t.w
	switch n := w.intn(100); {
	case n < 30:
		a := t.get("/v1/saf?status=" + []string{"queued", "held", "expired"}[w.intn(3)])
		var list struct {
			Data []struct {
				ID string `json:"id"`
			} `json:"data"`
		}
		if !a.ok || json.Unmarshal(a.body, &list) != nil || len(list.Data) == 0 {
			return
		}
		id := list.Data[w.intn(len(list.Data))].ID
		action := []string{"replay", "hold", "release"}[w.intn(3)]
		t.managerPost("/v1/saf/"+id+"/"+action, map[string]any{"reason": "sim"})
	case n < 40:
		t.managerPost("/v1/saf/replay", map[string]any{"reason": "sim"})
	case n < 60:
		state := []string{"pause", "stop", "go", "go"}[w.intn(4)]
		t.managerPut("/v1/estop", map[string]any{"state": state, "reason": "sim"})
	case n < 80:
		b := w.banks[w.intn(len(w.banks))]
		t.managerPost("/v1/gateways/"+b.name+"/"+[]string{"disable", "enable", "enable"}[w.intn(3)], map[string]any{})
	default:
		t.managerPut("/v1/estop", map[string]any{"state": "go", "reason": "sim"})
	}
}

func (t *terminal) managerPost(path string, v any) answer {
	body, _ := json.Marshal(v)
	return t.send(http.MethodPost, path, t.nextKey(), body)
}

func (t *terminal) managerPut(path string, v any) answer {
	body, _ := json.Marshal(v)
	return t.send(http.MethodPut, path, "", body)
}
