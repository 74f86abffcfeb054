package banksim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"storepay/gateway/banksim"
)

const (
	apiKey  = "sk_test_banksim_tests"
	goodPAN = "4242424242424242"
)

// day0 is the simulator's "today" in these tests.
var day0 = time.Date(2026, 11, 21, 10, 15, 0, 0, time.UTC)

// clock is a settable clock for Config.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// start returns a Sim with one listener and its bank client, closed at the
// end of the test. cfg.APIKey and cfg.Now default to apiKey and day0.
func start(t *testing.T, cfg banksim.Config) (*banksim.Sim, *bank) {
	t.Helper()
	if cfg.APIKey == "" {
		cfg.APIKey = apiKey
	}
	if cfg.Now == nil {
		cfg.Now = newClock(day0).Now
	}
	sim := banksim.New(cfg)
	t.Cleanup(func() {
		if err := sim.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	url, err := sim.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return sim, newBank(t, url)
}

// bank is a raw HTTP client of one simulator URL: the tests speak the
// protocol on the wire, not through storepay's client.
type bank struct {
	t   *testing.T
	url string
	key string
	hc  *http.Client
}

func newBank(t *testing.T, url string) *bank {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &bank{t: t, url: url, key: apiKey, hc: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// reply is one answer of the bank.
type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

// code is the code of an error body.
func (r reply) code(t *testing.T) string {
	t.Helper()
	var e struct{ Code, Message string }
	r.decode(t, &e)
	if e.Message == "" {
		t.Errorf("error body %s has no message", r.body)
	}
	return e.Code
}

func (r reply) auth(t *testing.T) authorization {
	t.Helper()
	var a authorization
	r.decode(t, &a)
	return a
}

func (r reply) list(t *testing.T) []authorization {
	t.Helper()
	var l struct{ Data []authorization }
	r.decode(t, &l)
	if l.Data == nil {
		t.Fatalf("list %s has no data array", r.body)
	}
	return l.Data
}

type authorization struct {
	ID             string    `json:"id"`
	Reference      string    `json:"reference"`
	Status         string    `json:"status"`
	Amount         int64     `json:"amount"`
	CapturedAmount int64     `json:"captured_amount"`
	Currency       string    `json:"currency"`
	AuthCode       string    `json:"auth_code"`
	DeclineCode    string    `json:"decline_code"`
	CreatedAt      time.Time `json:"created_at"`
}

// do sends a request; body is raw JSON text or a value to encode.
func (b *bank) do(method, path, idemKey string, body any) reply {
	b.t.Helper()
	r, err := b.try(context.Background(), method, path, idemKey, body)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

func (b *bank) try(ctx context.Context, method, path, idemKey string, body any) (reply, error) {
	var rd io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(v)
	default:
		data, err := json.Marshal(v)
		if err != nil {
			return reply{}, err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, b.url+path, rd)
	if err != nil {
		return reply{}, err
	}
	if b.key != "" {
		req.Header.Set("Authorization", "Bearer "+b.key)
	}
	if idemKey != "" {
		req.Header.Set("Idempotency-Key", idemKey)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

func (b *bank) post(path, idemKey string, body any) reply {
	b.t.Helper()
	return b.do(http.MethodPost, path, idemKey, body)
}

func (b *bank) get(path string) reply {
	b.t.Helper()
	return b.do(http.MethodGet, path, "", nil)
}

// authBody is an authorization request.
func authBody(ref, pan string, amount int64, capture bool) map[string]any {
	return map[string]any{
		"merchant_id": "store-042",
		"terminal_id": "lane-3",
		"reference":   ref,
		"amount":      amount,
		"currency":    "USD",
		"capture":     capture,
		"stored":      false,
		"card":        map[string]any{"pan": pan, "exp_month": 12, "exp_year": 2030},
	}
}

// authorize books an authorization and fails the test unless it is 200.
func (b *bank) authorize(ref string, amount int64, capture bool) authorization {
	b.t.Helper()
	r := b.post("/v1/authorizations", "key-"+ref, authBody(ref, goodPAN, amount, capture))
	if r.status != http.StatusOK {
		b.t.Fatalf("authorize %s: %d %s", ref, r.status, r.body)
	}
	return r.auth(b.t)
}

func wantStatus(t *testing.T, r reply, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("status = %d (%s), want %d", r.status, r.body, want)
	}
}

func wantError(t *testing.T, r reply, status int, code string) {
	t.Helper()
	wantStatus(t, r, status)
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if got := r.code(t); got != code {
		t.Errorf("code = %q, want %q", got, code)
	}
}

// eventually polls cond until it holds, failing the test after a few
// seconds: for states another goroutine reaches.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// async runs f in a goroutine and returns a channel with its result.
func async[T any](f func() T) <-chan T {
	ch := make(chan T, 1)
	go func() { ch <- f() }()
	return ch
}

// await receives from ch, failing the test after a few seconds.
func await[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("timed out waiting for a result")
		panic("unreachable")
	}
}
