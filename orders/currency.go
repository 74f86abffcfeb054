package orders

import (
	"fmt"
	"strconv"
	"strings"
)

// iso4217 lists the active ISO 4217 currency codes.
var iso4217 = func() map[string]bool {
	m := map[string]bool{}
	for _, c := range strings.Fields(`AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB
		BRL BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR
		FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES
		KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR
		MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR
		SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH
		UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG`) {
		m[c] = true
	}
	return m
}()

// ValidCurrency reports whether code is an active ISO 4217 code.
func ValidCurrency(code string) bool { return iso4217[code] }

// minorDigits are the ISO 4217 currencies whose minor unit is not a
// hundredth, as ISO 4217 (and the banks, ISO 8583's field 4 among them)
// count them. golang.org/x/text/currency was weighed and not used: its
// digits are CLDR's display habits, not ISO's minor units, and for
// amounts kept in minor units they would misplace the decimal point.
// Checked with x/text v0.42.0: JPY 0, ISK 0, CLP 0 and KWD 3 agree, but
// IQD is 0 (ISO 3), and COP, IRR, LBP, ALL, RSD, MGA, SYP and YER are 0
// (ISO 2): 150000 minor units of COP are 1,500.00 COP, which x/text
// would show as 150,000 COP. TestFormatMoneyISO4217 pins the table.
var minorDigits = map[string]int{
	"BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0, "RWF": 0,
	"UGX": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
	"BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
	// Fund codes: never a sale's currency (not in iso4217), but a bank's
	// settlement report may name one, and reconciliation writes it.
	"UYI": 0, "CLF": 4, "UYW": 4,
}

// MinorDigits is how many decimal places currency's minor unit has.
func MinorDigits(currency string) int {
	if d, ok := minorDigits[currency]; ok {
		return d
	}
	return 2
}

// FormatMoney is the one way storepay writes an amount for people (the
// console, the audit log, the CLI): minor units in their currency,
// grouped by thousands, with the code after: FormatMoney(123456, "USD")
// is "1,234.56 USD", FormatMoney(2700, "JPY") "2,700 JPY",
// FormatMoney(1500, "KWD") "1.500 KWD".
//
// Without a currency (an amount limit configured as a bare number) there
// is no decimal point to place: FormatMoney(500000, "") is "500,000 minor
// units", never a guess such as "5,000.00", which would be a hundred times
// off for a yen store.
func FormatMoney(amount int64, currency string) string {
	if currency == "" {
		s := groupThousands(strconv.FormatUint(absUint(amount), 10))
		if amount < 0 {
			s = "-" + s
		}
		if amount == 1 || amount == -1 {
			return s + " minor unit"
		}
		return s + " minor units"
	}
	digits := MinorDigits(currency)
	neg := amount < 0
	u := absUint(amount)
	scale := uint64(1)
	for range digits {
		scale *= 10
	}
	s := groupThousands(strconv.FormatUint(u/scale, 10))
	if digits > 0 {
		s += fmt.Sprintf(".%0*d", digits, u%scale)
	}
	if neg {
		s = "-" + s
	}
	return s + " " + currency
}

// absUint is |amount|, math.MinInt64 included.
func absUint(amount int64) uint64 {
	u := uint64(amount)
	if amount < 0 {
		u = -u
	}
	return u
}

func groupThousands(s string) string {
	if len(s) <= 3 {
		return s
	}
	var b strings.Builder
	lead := len(s) % 3
	if lead > 0 {
		b.WriteString(s[:lead])
	}
	for i := lead; i < len(s); i += 3 {
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(s[i : i+3])
	}
	return b.String()
}
