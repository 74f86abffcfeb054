package chaos

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// A duplicate storm: terminals that lost their connection send the same
// payment again and again, many at once. Each Idempotency-Key makes
// exactly one payment and one charge; concurrent repeats are told the
// first is still running; every later repeat gets the first answer, byte
// for byte.
func TestDuplicateStorm(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := newStore(t, []gw{{bank: a}}, nil)
	a.faults(t, "", `{"latency":{"fixed":"30ms"}}`)
	const keys, repeats = 20, 15
	orders := make([]string, keys)
	for i := range orders {
		orders[i] = s.order(700)
	}
	type answer struct {
		key string
		r   resp
	}
	answers := make(chan answer, keys*repeats)
	var wg sync.WaitGroup
	for k := 0; k < keys; k++ {
		for r := 0; r < repeats; r++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				key := fmt.Sprintf("storm-%d", k)
				answers <- answer{key, s.call("POST", "/v1/orders/"+orders[k]+"/payments", s.terminal, key, card(700, nil))}
			}()
		}
	}
	wg.Wait()
	close(answers)
	first := map[string]resp{}
	inUse := 0
	for a := range answers {
		switch {
		case a.r.status == 409 && a.r.str("code") == "idempotency_key_in_use":
			inUse++
		case a.r.status == 201:
			if f, ok := first[a.key]; ok && f.str("id") != a.r.str("id") {
				t.Fatalf("key %s made two payments: %s and %s", a.key, f.str("id"), a.r.str("id"))
			}
			first[a.key] = a.r
		default:
			t.Fatalf("storm answer: %s", a.r)
		}
	}
	if inUse == 0 {
		t.Fatal("no repeat overlapped its first request: the storm proved nothing")
	}
	// After the storm every repeat replays the first answer exactly.
	for k := 0; k < keys; k++ {
		key := fmt.Sprintf("storm-%d", k)
		r := s.call("POST", "/v1/orders/"+orders[k]+"/payments", s.terminal, key, card(700, nil))
		if string(r.raw) != string(first[key].raw) {
			t.Fatalf("replay of %s differs:\n%s\n%s", key, r.raw, first[key].raw)
		}
	}
	charges := where(t, a)
	if len(charges) != keys {
		t.Fatalf("%d charges for %d payments", len(charges), keys)
	}
	if ps := s.get("/v1/payments?limit=1000").body["data"].([]any); len(ps) != keys {
		t.Fatalf("%d payments for %d keys", len(ps), keys)
	}
}

// Bad input of every kind gets a clear 4xx problem, never a 500, and
// changes nothing; storepay stays up.
func TestBadInputChangesNothing(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := newStore(t, []gw{{bank: a}}, nil)
	order := s.order(900)
	pay := "/v1/orders/" + order + "/payments"
	bodies := []string{
		``, `{`, `[]`, `null`, `"x"`, `{"method":"card"}{"method":"cash"}`,
		`{"method":"card","amount":900,"card":{"pan":"4242424242424242","exp_month":12,"exp_year":2030},"extra":true}`,
		`{"method":"card","amount":-5,"card":{"pan":"4242424242424242","exp_month":12,"exp_year":2030}}`,
		`{"method":"card","amount":99999999999999999999,"card":{"pan":"4242424242424242","exp_month":12,"exp_year":2030}}`,
		`{"method":"card","amount":900,"card":{"pan":"4242 4242 4242 4242","exp_month":12,"exp_year":2030}}`,
		`{"method":"card","amount":900,"card":{"pan":"4242424242424242","exp_month":"12","exp_year":2030}}`,
		`{"method":"card","amount":900,"card":{"pan":"4242424242424242","exp_month":12,"exp_year":2030},"offline_behavior":"maybe"}`,
		`{"method":"cheque","amount":900}`,
		`{"method":"cash","amount":900,"tip_amount":-1}`,
		"{\"method\":\"cash\",\"amount\":900,\"currency\":\"\xff\xfe\"}",
		`{"method":"cash","amount":1e3}`,
		`{"method":"cash","amount":900.0}`,
		strings.Repeat(`{"a":`, 100000) + strings.Repeat(`}`, 100000),
		`{"method":"cash","amount":900,"pad":"` + strings.Repeat("x", 2<<20) + `"}`,
	}
	for i, b := range bodies {
		req, _ := http.NewRequest("POST", s.url+pay, bytes.NewReader([]byte(b)))
		req.Header.Set("Authorization", "Bearer "+s.terminal)
		req.Header.Set("Idempotency-Key", fmt.Sprintf("bad-%d", i))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("body %d: %v", i, err)
		}
		raw, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode < 400 || res.StatusCode >= 500 || !strings.Contains(string(raw), `"code"`) ||
			res.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("body %d (%.60q): %d %s", i, b, res.StatusCode, raw)
		}
		if strings.Contains(string(raw), "4242424242424242") {
			t.Fatalf("body %d: the answer echoes the card number: %s", i, raw)
		}
	}
	for _, h := range []map[string]string{
		{"Idempotency-Key": strings.Repeat("k", 256)},
		{"Idempotency-Key": "café"},
		{"Idempotency-Key": `"unterminated`},
		{"Authorization": "Bearer " + s.terminal + "x"},
		{"Authorization": "Basic dXNlcjpwYXNz"},
	} {
		req, _ := http.NewRequest("POST", s.url+pay, strings.NewReader(`{"method":"cash","amount":900}`))
		req.Header.Set("Authorization", "Bearer "+s.terminal)
		req.Header.Set("Idempotency-Key", "good")
		for k, v := range h {
			req.Header.Set(k, v)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != 400 && res.StatusCode != 401 {
			t.Fatalf("header %v: %d", h, res.StatusCode)
		}
	}
	if o := s.get("/v1/orders/" + order); o.str("status") != "open" || o.body["paid_amount"].(float64) != 0 {
		t.Fatalf("bad input changed the order: %s", o)
	}
	if ps := s.get("/v1/payments").body["data"].([]any); len(ps) != 0 {
		t.Fatalf("bad input made %d payments", len(ps))
	}
	if r := s.get("/healthz"); r.status != 200 {
		t.Fatalf("storepay is not healthy after bad input: %s", r)
	}
}

// A card number where an id, a query, a JSON key or a request id belongs
// (a scanner in the wrong box) is refused like any bad input and shows up
// masked, if at all: in no answer, no log line and no database file.
func TestCardNumberInTheWrongPlaceIsNeverKept(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := newStore(t, []gw{{bank: a}}, nil)
	const pan = "4111111111111111"
	send := func(method, path, key string, body string, header ...string) {
		t.Helper()
		req, _ := http.NewRequest(method, s.url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+s.terminal)
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode < 400 || res.StatusCode >= 500 {
			t.Fatalf("%s %s: %d %s", method, path, res.StatusCode, raw)
		}
		if strings.Contains(string(raw), pan) || strings.Contains(res.Header.Get("X-Request-Id"), pan) {
			t.Fatalf("%s %s: the answer shows the card number: %s", method, path, raw)
		}
	}
	send("GET", "/v1/orders/"+pan, "", "")
	send("GET", "/v1/payments/"+pan, "", "")
	send("GET", "/v1/payments?status="+pan, "", "")
	send("POST", "/v1/orders/"+pan+"/payments", "wrong-box-1", `{"method":"cash","amount":900}`)
	send("POST", "/v1/payments/"+pan+"/void", "wrong-box-2", `{}`)
	send("POST", "/v1/orders", "wrong-box-3", `{"channel":"walk_in","currency":"USD","`+pan+`":1}`)
	send("GET", "/v1/orders/"+pan, "", "", "X-Request-Id", pan)
	s.proc.stop(t)
	files, _ := filepath.Glob(filepath.Join(s.dir, "storepay.db*"))
	for _, f := range append(files, s.proc.log) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(pan)) {
			t.Errorf("%s holds the card number", filepath.Base(f))
		}
	}
	if len(files) == 0 {
		t.Fatal("no database file to check")
	}
}
