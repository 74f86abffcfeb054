package acquirer

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"storepay/gateway"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"0", 0},
		{"-3", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"Mon, 01 Nov 2100 00:00:00 GMT", 24 * time.Hour}, // capped as seconds are
		{"99999999999999999999", 24 * time.Hour},
		{"-99999999999999999999", 0},
		{"soon", 0},
	} {
		if got := parseRetryAfter(c.in, now); got != c.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"card 4242424242424242 declined":  "card [redacted] declined",
		"card 4242 4242 4242 4242.":       "card [redacted].",
		"pan 4242-4242-4242-4242":         "pan [redacted]",
		"amount 1250 exceeds 1000":        "amount 1250 exceeds 1000",
		"id 2026-11-21 at 10":             "id 2026-11-21 at 10",
		"4000000000000002":                "[redacted]",
		"refunds would exceed 1200 of 12": "refunds would exceed 1200 of 12",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAuthorizeBodyIsDeterministic(t *testing.T) {
	body := authorizeBody{MerchantID: "store-042", Reference: "pay_1", Amount: 1250, Currency: "USD", Capture: true,
		Card: gateway.Card{PAN: "4242424242424242", ExpMonth: 12, ExpYear: 2030}}
	first, err := json.Marshal(body)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"merchant_id":"store-042","terminal_id":"","reference":"pay_1","amount":1250,"currency":"USD","capture":true,"stored":false,"card":{"pan":"4242424242424242","exp_month":12,"exp_year":2030}}`
	if string(first) != want {
		t.Errorf("body = %s\nwant   %s", first, want)
	}
	for range 10 {
		again, _ := json.Marshal(body)
		if !bytes.Equal(again, first) {
			t.Fatalf("encoding changed: %s", again)
		}
	}
}

func TestValidKey(t *testing.T) {
	long := string(bytes.Repeat([]byte("k"), 256))
	for key, want := range map[string]bool{"": false, "pay_1:auth": true, "tab\tkey": false, "é": false, long: false, long[:255]: true} {
		if got := validKey(key); got != want {
			t.Errorf("validKey(%q) = %v, want %v", key, got, want)
		}
	}
}
