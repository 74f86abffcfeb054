package gateway_test

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"storepay/gateway"
)

const pan = "4242424242424242"

func TestCardValidate(t *testing.T) {
	now := time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		card gateway.Card
		want error
	}{
		{"Valid", gateway.Card{PAN: pan, ExpMonth: 12, ExpYear: 2030}, nil},
		{"ValidThroughExpiryMonth", gateway.Card{PAN: pan, ExpMonth: 11, ExpYear: 2026}, nil},
		{"Expired", gateway.Card{PAN: pan, ExpMonth: 10, ExpYear: 2026}, gateway.ErrExpiredCard},
		{"BadLuhn", gateway.Card{PAN: "4242424242424241", ExpMonth: 12, ExpYear: 2030}, gateway.ErrInvalidCard},
		{"Letters", gateway.Card{PAN: "42424242424242a2", ExpMonth: 12, ExpYear: 2030}, gateway.ErrInvalidCard},
		{"TooShort", gateway.Card{PAN: "42", ExpMonth: 12, ExpYear: 2030}, gateway.ErrInvalidCard},
		{"BadMonth", gateway.Card{PAN: pan, ExpMonth: 13, ExpYear: 2030}, gateway.ErrInvalidCard},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.card.Validate(now); !errors.Is(got, tc.want) {
				t.Fatalf("Validate = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCardNeverPrintsPAN(t *testing.T) {
	c := gateway.Card{PAN: pan, ExpMonth: 12, ExpYear: 2030}
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("x", "card", c)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%v %+v %#v %s", c, c, c, c), b.String()} {
		if strings.Contains(s, pan) {
			t.Fatalf("PAN leaked: %s", s)
		}
		if !strings.Contains(s, "4242") {
			t.Fatalf("last4 missing: %s", s)
		}
	}
	if c.Brand() != "visa" || (gateway.Card{PAN: "5555555555554444"}).Brand() != "mastercard" {
		t.Fatal("brand detection")
	}
}

func TestVault(t *testing.T) {
	key, err := gateway.ParseCardKey(strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	v, err := gateway.NewVault(key)
	if err != nil {
		t.Fatal(err)
	}
	c := gateway.Card{PAN: pan, ExpMonth: 12, ExpYear: 2030}
	sealed, err := v.Seal("pay_1", c)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(sealed), pan) {
		t.Fatal("sealed data holds the PAN in clear")
	}
	got, err := v.Open("pay_1", sealed)
	if err != nil || got != c {
		t.Fatalf("Open = %v, %v", got, err)
	}
	if _, err := v.Open("pay_2", sealed); err == nil {
		t.Fatal("ciphertext opened under another record's id")
	}
	other, _ := gateway.NewVault(make([]byte, 32))
	if _, err := other.Open("pay_1", sealed); err == nil {
		t.Fatal("ciphertext opened with another key")
	}
	fp1, fp2 := v.Fingerprint(pan), v.Fingerprint(pan)
	if fp1 != fp2 || fp1 == other.Fingerprint(pan) || strings.Contains(fp1, "4242") {
		t.Fatal("fingerprint must be stable, keyed and opaque")
	}
	for _, bad := range []string{"", "abc", strings.Repeat("zz", 32), strings.Repeat("ab", 31)} {
		if _, err := gateway.ParseCardKey(bad); err == nil {
			t.Errorf("ParseCardKey(%q) accepted", bad)
		}
	}
}

func TestWithCheckDigit(t *testing.T) {
	if got := gateway.WithCheckDigit("424242424242424"); got != pan {
		t.Fatalf("WithCheckDigit = %s, want %s", got, pan)
	}
	for _, p := range []string{"4", "45000000000001", "555555000000444"} {
		if !gateway.LuhnValid(gateway.WithCheckDigit(p)) && len(p) >= 11 {
			t.Errorf("%s + check digit fails Luhn", p)
		}
	}
}

func TestMaskPANs(t *testing.T) {
	for in, want := range map[string]string{
		"4242424242424242":                     "424242******4242",
		"reference 4242 4242 4242 4242 here":   "reference 424242******4242 here",
		"type \"5555-5555-5555-4444\" is not":  "type \"555555******4444\" is not",
		"8815012345678901":                     "8815012345678901", // a bank reference, not a card number
		"4242424242424241":                     "4242424242424241", // fails the Luhn check
		"pay_019aa6c1e5f07d2b8c1e4a7f3b2dd000": "pay_019aa6c1e5f07d2b8c1e4a7f3b2dd000",
		"amount 1450":                          "amount 1450",
		// An id whose hex digits run long is not a card number.
		"pay_01a200de6d007d1da61998741005244f": "pay_01a200de6d007d1da61998741005244f",
		"x4242424242424242":                    "x424242******4242",
		"(4242424242424242)":                   "(424242******4242)",
		"4242424242424242abc":                  "424242******4242abc",
		"PAN4242424242424242":                  "PAN424242******4242",
		"card_4242424242424242":                "card_424242******4242",
		"2024-05-01 4242424242424242":          "2024-05-01 424242******4242",
		"qty 1 4242 4242 4242 4242":            "qty 1 424242******4242",
		"4242424242424242 1225":                "424242******4242 1225",
		"4242424242424242 4000056655665556":    "424242******4242 400005******5556",
		"4242424242424242 5555 5555 5555 4444": "424242******4242 555555******4444",
		"card_4242424242424242abc":             "card_424242******4242abc",
	} {
		if got := gateway.MaskPANs(in); got != want {
			t.Errorf("MaskPANs(%q) = %q, want %q", in, got, want)
		}
	}
}

// A long run of short digit groups (a hostile search box) is read in
// linear time: every stretch looked at is at most 19 digits.
func BenchmarkMaskPANsManyGroups(b *testing.B) {
	s := strings.Repeat("1 ", 1<<19) // 1 MiB
	for b.Loop() {
		gateway.MaskPANs(s)
	}
}
