package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"storepay/gateway"
	"storepay/gateway/iso8583"
)

// FuzzParseConfig feeds ParseConfig arbitrary files:
//
//   - it never panics;
//   - a refusal starts "config: " and, for any JSON object, names the key
//     at fault: a path of the file's own keys or of the config's keys,
//     with indices ("gateways[1].urls[0]"), before the reason;
//   - a config it accepts is one storepay can run on: it writes back
//     (as the demo writes its config) to a file that reads back the same,
//     its banks build into a router, and under each bank's policies a
//     bank that approves at once takes a payment.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(goodConfig))
	f.Add([]byte(`{"store_id":"s","listen":":1","database":"d","gateways":[{"name":"a","protocol":"acquirer-json","urls":["http://x"],"merchant_id":"m","api_key_env":"K"}],"offline":{"floor_limit":500}}`))
	f.Add([]byte(`{"store_id":"store-042","listen":"[::1]:8080","database":"/var/lib/storepay/storepay.db","log_level":"debug",
		"shutdown_timeout":"35s","payment_budget":"25s","resolve_interval":"5s",
		"gateways":[{"name":"bank-a","protocol":"acquirer-json","urls":["https://bank.example/acq"],"merchant_id":"m","api_key_env":"K",
		"attempt_timeout":"5s","max_attempts":4,"backoff_min":"100ms","backoff_max":"2s","breaker_failure_rate":0.5,"breaker_min_calls":5,
		"breaker_window":"10s","breaker_delay":"10s","breaker_successes":2,"max_concurrent":64,"rate_per_second":20,"probe_interval":"-1s","max_retry_after":"60s"}],
		"offline":{"floor_limit":10000,"total_limit":500000,"max_age":"72h","velocity_count":3,"velocity_amount":20000,"velocity_window":"24h","hot_cards":["400000******9979"]},
		"forwarding":{"concurrency":1,"rate_per_second":20,"max_attempts":10,"backoff_min":"1s","backoff_max":"5m","interval":"1s","call_timeout":"30s",
		"guard_window":"1m","guard_max_errors":100,"guard_max_amount":1000000}}`))
	f.Add([]byte(`{"store_id":"s","listen":"127.0.0.1:99999","database":"d","gateways":[]}`))
	f.Add([]byte(`{"store_id":"s","listen":":1","database":"d","gateways":[{"name":"a","protocol":"acquirer-json","urls":["ftp://x"],"merchant_id":"m","api_key_env":"K"}]}`))
	f.Add([]byte(`{"store_id":"s","listen":":1","database":"d","gateways":[{"name":"a","protocol":"acquirer-json","urls":["http://x"],"merchant_id":"m","api_key_env":"K"}],"offline":{"velocity_count":-1}}`))
	f.Add([]byte(`{"store_id":"s","listen":":1","database":"d","gateways":[{"name":"a","protocol":"acquirer-json","urls":["http://x"],"merchant_id":"m","api_key_env":"K","Max_Attempts":3}]}`))
	f.Add([]byte(`{"store_id":"s","listen":":1","database":"d","gateways":[{"name":"a","protocol":"acquirer-json","urls":["http://x"],"merchant_id":"m","api_key_env":"K","backoff_min":"-2562047h47m16.854775808s"}]}`))
	// Policies the failsafe-go builders take and storepay cannot run on.
	for _, knob := range []string{`"breaker_window":"1ns"`, `"breaker_successes":1000000000000`, `"rate_per_second":1e10`,
		`"rate_per_second":1e-300`, `"attempt_timeout":"1000000h"`, `"max_concurrent":9223372036854775807`, `"backoff_max":"-1s"`} {
		f.Add([]byte(`{"store_id":"s","listen":":1","database":"d","gateways":[{"name":"a","protocol":"acquirer-json","urls":["http://x"],"merchant_id":"m","api_key_env":"K",` + knob + `}]}`))
	}
	f.Add([]byte(`{"store_id":"s","listen":":1","database":"d","gateways":[{"name":"a","protocol":"acquirer-json","urls":["http://x"],"merchant_id":"m","api_key_env":"K"}],"forwarding":{"concurrency":1000000000000}}`))
	f.Add([]byte(`{"store_id":"s","store_id":"t"}`))
	f.Add([]byte(`{"a: b.c[0]":1}`))
	f.Add([]byte(`[]`))
	f.Add([]byte("\xef\xbb\xbf{}"))
	f.Add([]byte(``))

	known := configKeys(reflect.TypeFor[Config](), map[string]bool{})
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, file []byte) {
		c, err := ParseConfig(file)
		if err != nil {
			msg := err.Error()
			rest, ok := strings.CutPrefix(msg, "config: ")
			if !ok {
				t.Fatalf("refusal %q does not start with \"config: \"", msg)
			}
			var doc map[string]any
			if json.Unmarshal(file, &doc) == nil && !namesKey(rest, doc, known) {
				t.Fatalf("refusal %q names no key of the file or of the config before its reason", msg)
			}
			return
		}
		// Written back, as the demo writes its config, it reads back the
		// same.
		written, err := json.MarshalIndent(c, "", "  ")
		if err != nil {
			t.Fatalf("accepted config does not encode: %v", err)
		}
		again, err := ParseConfig(written)
		if err != nil {
			t.Fatalf("accepted config, written back, is refused: %v\n%s", err, written)
		}
		if rewritten, _ := json.MarshalIndent(again, "", "  "); !bytes.Equal(rewritten, written) {
			t.Fatalf("accepted config changes when written back and read again:\n%s\n%s", written, rewritten)
		}
		// Its banks build (serve's first step with them); nothing starts.
		router, err := buildRouter(c, func(string) string { return "api-key" }, quiet, memoryISO)
		if err != nil {
			t.Fatalf("accepted config's banks do not build: %v", err)
		}
		if got := len(router.Banks()); got != len(c.Gateways) {
			t.Fatalf("router has %d banks, the config %d", got, len(c.Gateways))
		}
		router.Close()
		healthyBankTakesAPayment(t, c, quiet)
	})
}

// healthyBankTakesAPayment runs one authorization through each bank's
// policies (breaker, retries, timeouts, bulkhead, rate limit) as the
// config sets them, against a bank that approves at once: a config
// storepay accepts must not panic there, nor leave a healthy bank unable
// to take a payment. Attempt timeouts under a second are lifted to one:
// the bank answers in microseconds, but a loaded machine can stall a
// goroutine for milliseconds, and this is about the policies, not the
// machine.
func healthyBankTakesAPayment(t *testing.T, c Config, log *slog.Logger) {
	t.Helper()
	var specs []gateway.BankSpec
	for _, g := range c.Gateways {
		pol := g.policy()
		if pol.AttemptTimeout != 0 && pol.AttemptTimeout < time.Second {
			pol.AttemptTimeout = time.Second
		}
		specs = append(specs, gateway.BankSpec{Name: g.Name, Policy: pol, Endpoints: []gateway.Endpoint{instantBank{}}})
	}
	router, err := gateway.NewRouter(specs, log)
	if err != nil {
		t.Fatalf("accepted config's policies do not build: %v", err)
	}
	defer router.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, g := range c.Gateways {
		req := gateway.AuthRequest{Key: "pay_1:auth", Reference: "pay_1", Amount: 900, Currency: "USD", Capture: true,
			Card: gateway.Card{PAN: "4242424242424242", ExpMonth: 12, ExpYear: 2030}}
		if _, err := router.AuthorizeAt(ctx, g.Name, req); err != nil {
			t.Fatalf("a bank that approves at once takes no payment under %s's policy: %v", g.Name, err)
		}
	}
}

// instantBank approves every authorization at once.
type instantBank struct{}

func (instantBank) URL() string { return "http://bank.invalid" }
func (instantBank) Authorize(_ context.Context, req gateway.AuthRequest) (gateway.Authorization, error) {
	return gateway.Authorization{ID: "auth_1", Reference: req.Reference, Status: gateway.StatusApproved, Amount: req.Amount,
		CapturedAmount: req.Amount, Currency: req.Currency, AuthCode: "A1B2C3"}, nil
}
func (instantBank) Find(context.Context, gateway.Lookup) ([]gateway.Authorization, error) {
	return []gateway.Authorization{}, nil
}
func (instantBank) Capture(context.Context, gateway.CaptureRequest) (gateway.Authorization, error) {
	return gateway.Authorization{}, errors.New("not used")
}
func (instantBank) Reverse(context.Context, gateway.ReverseRequest) ([]gateway.Authorization, error) {
	return nil, errors.New("not used")
}
func (instantBank) Refund(context.Context, gateway.RefundRequest) (gateway.Refund, error) {
	return gateway.Refund{}, errors.New("not used")
}
func (instantBank) Health(context.Context) error { return nil }
func (instantBank) Settlement(context.Context, string) ([]byte, error) {
	return nil, errors.New("not used")
}

// configKeys collects the JSON keys of the config's types, at any depth.
func configKeys(t reflect.Type, into map[string]bool) map[string]bool {
	for t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct || t == reflect.TypeFor[Duration]() {
		return into
	}
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			into[name] = true
		}
		configKeys(t.Field(i).Type, into)
	}
	return into
}

// namesKey reports whether msg starts with a key path followed by ": ":
// segments joined by '.', each a key of the file at that place or a key
// of the config (a missing key is named by the config's name for it),
// each followed by any number of [i].
func namesKey(msg string, node any, known map[string]bool) bool {
	obj, _ := node.(map[string]any)
	try := func(k string) bool {
		r, ok := strings.CutPrefix(msg, k)
		if !ok {
			return false
		}
		child, inFile := obj[k]
		if k == "" && !inFile {
			return false // "" is a key only where the file has one
		}
		for strings.HasPrefix(r, "[") {
			end := strings.IndexByte(r, ']')
			if end < 0 {
				return false
			}
			i, err := strconv.Atoi(r[1:end])
			if err != nil || i < 0 {
				return false
			}
			if arr, ok := child.([]any); ok && i < len(arr) {
				child = arr[i]
			} else {
				child = nil
			}
			r = r[end+1:]
		}
		if strings.HasPrefix(r, ": ") {
			return true
		}
		r, ok = strings.CutPrefix(r, ".")
		return ok && namesKey(r, child, known)
	}
	for k := range obj {
		if try(k) {
			return true
		}
	}
	for k := range known {
		if try(k) {
			return true
		}
	}
	return false
}

// memoryISO builds an iso8583 gateway's endpoints without a database:
// nothing connects until they are opened.
func memoryISO(g GatewayConfig) ([]gateway.Endpoint, error) {
	stans := &iso8583.MemorySTANs{}
	var eps []gateway.Endpoint
	for _, u := range g.URLs {
		c, err := iso8583.NewClient(iso8583.Config{URL: u, Gateway: g.Name, STANs: stans,
			Terminal: iso8583.Terminal{TerminalID: g.TerminalID, MerchantID: g.MerchantID, Location: time.UTC}})
		if err != nil {
			return nil, err
		}
		ep, err := iso8583.NewEndpoint(iso8583.EndpointConfig{Client: c, Traces: &iso8583.MemoryTraces{STANs: stans}})
		if err != nil {
			return nil, err
		}
		eps = append(eps, ep)
	}
	return eps, nil
}
