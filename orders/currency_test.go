package orders_test

import (
	"testing"

	"storepay/orders"
)

// Amounts are written one way everywhere, in their currency's ISO 4217
// minor unit (not CLDR's display digits: see orders.FormatMoney).
func TestFormatMoneyISO4217(t *testing.T) {
	for _, tc := range []struct {
		amount   int64
		currency string
		want     string
	}{
		{3150, "USD", "31.50 USD"},
		{123456789, "EUR", "1,234,567.89 EUR"},
		{2700, "JPY", "2,700 JPY"},
		{2700, "ISK", "2,700 ISK"},
		{2700, "CLP", "2,700 CLP"},
		{1500, "KWD", "1.500 KWD"},
		{1500, "IQD", "1.500 IQD"},      // CLDR (x/text) says 0 digits
		{150000, "COP", "1,500.00 COP"}, // CLDR (x/text) says 0 digits
		{5, "USD", "0.05 USD"},
		{-450, "USD", "-4.50 USD"},
		{-9223372036854775808, "USD", "-92,233,720,368,547,758.08 USD"},
		{12345, "CLF", "1.2345 CLF"}, // a fund code a bank's report may name
		{500, "UYI", "500 UYI"},
		// A limit configured without a currency: no decimal point to guess.
		{500000, "", "500,000 minor units"},
		{1, "", "1 minor unit"},
		{-2700, "", "-2,700 minor units"},
	} {
		if got := orders.FormatMoney(tc.amount, tc.currency); got != tc.want {
			t.Errorf("FormatMoney(%d, %s) = %q; want %q", tc.amount, tc.currency, got, tc.want)
		}
	}
}
