package iso8583

// golang.org/x/text/currency knows the ISO 4217 alphabetic codes but not
// their numeric ones, which field 49 carries: hence this table. It holds
// the currencies a store is likely to take; a payment in another one is
// refused before anything is sent.
var currencyNumeric = map[string]string{
	"AED": "784", "ARS": "032", "AUD": "036", "BGN": "975", "BRL": "986",
	"CAD": "124", "CHF": "756", "CLP": "152", "CNY": "156", "COP": "170",
	"CZK": "203", "DKK": "208", "EUR": "978", "GBP": "826", "HKD": "344",
	"HUF": "348", "IDR": "360", "ILS": "376", "INR": "356", "ISK": "352",
	"JPY": "392", "KRW": "410", "MXN": "484", "MYR": "458", "NOK": "578",
	"NZD": "554", "PEN": "604", "PHP": "608", "PLN": "985", "RON": "946",
	"SAR": "682", "SEK": "752", "SGD": "702", "THB": "764", "TRY": "949",
	"USD": "840", "ZAR": "710",
}

var currencyAlpha = func() map[string]string {
	m := make(map[string]string, len(currencyNumeric))
	for a, n := range currencyNumeric {
		m[n] = a
	}
	return m
}()

// CurrencyNumeric returns the ISO 4217 numeric code of an alphabetic one
// ("USD" → "840"), as field 49 carries it.
func CurrencyNumeric(alpha string) (string, bool) {
	n, ok := currencyNumeric[alpha]
	return n, ok
}

// CurrencyAlpha returns the ISO 4217 alphabetic code of a numeric one
// ("978" → "EUR").
func CurrencyAlpha(numeric string) (string, bool) {
	a, ok := currencyAlpha[numeric]
	return a, ok
}
