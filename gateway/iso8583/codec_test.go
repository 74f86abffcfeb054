package iso8583_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	moov "github.com/moov-io/iso8583"
	"github.com/moov-io/iso8583/specs"

	"storepay/gateway"
	"storepay/gateway/iso8583"
)

var (
	card     = gateway.Card{PAN: "4242424242424242", ExpMonth: 12, ExpYear: 2030}
	terminal = iso8583.Terminal{TerminalID: "SP042001", MerchantID: "store-042", Location: time.UTC}
	sentAt   = time.Date(2026, 11, 21, 10, 15, 0, 0, time.UTC)
)

func trace(stan iso8583.STAN) iso8583.Trace {
	return iso8583.Trace{STAN: stan, RRN: iso8583.MakeRRN(sentAt, stan), Time: sentAt}
}

func pack(t *testing.T, f iso8583.Fields, err error) string {
	t.Helper()
	if err != nil {
		t.Fatalf("build: %v", err)
	}
	b, err := f.Pack()
	if err != nil {
		t.Fatalf("Pack: %v", err)
	}
	return string(b)
}

// The wire bytes, written out by hand from the profile: what a switch
// built from the contract page alone (moov-io's Spec87ASCII plus field 70)
// sends and expects. Spec87ASCII's bitmap is one 128-bit bitmap, 32 hex
// characters, bit 1 clear even with field 70 or 90 present.
func TestWireFormat(t *testing.T) {
	tests := []struct {
		name string
		got  func() (iso8583.Fields, error)
		want string
	}{
		{
			name: "Purchase0200",
			got: func() (iso8583.Fields, error) {
				return iso8583.Purchase{Trace: trace(42), Card: card, Amount: 1250, Currency: "USD"}.Fields(terminal)
			},
			want: "0200" + "723C040008C08000" + "0000000000000000" +
				"164242424242424242" + "000000" + "000000001250" + "1121101500" + "000042" +
				"101500" + "1121" + "3012" + "010" + "632510000042" + "SP042001" + "store-042      " + "840",
		},
		{
			name: "OfflineAdvice0220PadsY3",
			got: func() (iso8583.Fields, error) {
				return iso8583.OfflineAdvice{Trace: trace(7), Card: card, Amount: 990, Currency: "EUR"}.Fields(terminal)
			},
			want: "0220" + "723C04000CC08000" + "0000000000000000" +
				"164242424242424242" + "000000" + "000000000990" + "1121101500" + "000007" +
				"101500" + "1121" + "3012" + "010" + "632510000007" + "Y3    " + "SP042001" + "store-042      " + "978",
		},
		{
			name: "Reversal0421",
			got: func() (iso8583.Fields, error) {
				return iso8583.Reversal{
					Trace: trace(9), Card: card, Amount: 1250, Currency: "USD", Reason: iso8583.ReasonNoAnswer,
					Original: iso8583.Original{MTI: "0200", STAN: 42, TransmissionTime: "1121101500"}, Repeat: true,
				}.Fields(terminal)
			},
			// 2, 3, 4, 7, 11, 37, 39, 41, 42, 49, 90
			want: "0421" + "722000000AC08000" + "0000004000000000" +
				"164242424242424242" + "000000" + "000000001250" + "1121101500" + "000009" +
				"632510000009" + "68" + "SP042001" + "store-042      " + "840" +
				"0200" + "000042" + "1121101500" + strings.Repeat("0", 22),
		},
		{
			name: "SignOn0800",
			got: func() (iso8583.Fields, error) {
				return iso8583.NetworkFields(terminal, iso8583.NetworkSignOn, 1, sentAt)
			},
			want: "0800" + "0220000000800000" + "0400000000000000" + "1121101500" + "000001" + "SP042001" + "001",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := tt.got()
			if got := pack(t, f, err); got != tt.want {
				t.Errorf("packed\n got %s\nwant %s", got, tt.want)
			}
			// A peer that uses the library's spec as it comes reads it.
			m := moov.NewMessage(specs.Spec87ASCII)
			if tt.name != "SignOn0800" { // Spec87ASCII lacks field 70
				if err := m.Unpack([]byte(tt.want)); err != nil {
					t.Errorf("Spec87ASCII cannot unpack it: %v", err)
				}
			}
		})
	}
}

func TestUnpackTrimsPaddingAndKeepsWidths(t *testing.T) {
	f, err := iso8583.Completion{
		Trace: trace(12), Card: card, Amount: 1450, Currency: "USD", AuthCode: "A1B",
		Original: iso8583.Original{MTI: "0100", STAN: 11, TransmissionTime: "1121101400"},
	}.Fields(terminal)
	raw := pack(t, f, err)
	got, err := iso8583.Unpack([]byte(raw))
	if err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	if got != f {
		t.Errorf("round trip\n got %v\nwant %v", got, f)
	}
	if got.MerchantID != "store-042" || got.AuthCode != "A1B" || got.ProcessingCode != "000000" {
		t.Errorf("got 42=%q 38=%q 3=%q", got.MerchantID, got.AuthCode, got.ProcessingCode)
	}
	o, err := iso8583.ParseOriginal(got.Original)
	if err != nil || o != f2o("0100", 11, "1121101400") {
		t.Errorf("field 90 = %+v, %v", o, err)
	}
}

func f2o(mti string, stan iso8583.STAN, at string) iso8583.Original {
	return iso8583.Original{MTI: mti, STAN: stan, TransmissionTime: at}
}

func TestUnpackRefusesWhatBreaksTheProfile(t *testing.T) {
	good, err := iso8583.Purchase{Trace: trace(42), Card: card, Amount: 1250, Currency: "USD"}.Fields(terminal)
	raw := pack(t, good, err)
	tests := []struct {
		name string
		raw  string
	}{
		{"TrailingBytes", raw + "XYZ"},
		{"CutShort", raw[:len(raw)-5]},
		{"LettersInAmount", strings.Replace(raw, "000000001250", "0000000012A0", 1)},
		{"LettersInMTI", "02X0" + raw[4:]},
		{"NotHexBitmap", raw[:4] + "ZZ" + raw[6:]},
		{"Garbage", "\x00\x01\x02 garbage"},
		{"FieldNotInSpec", "0200" + "0000000000000000" + "0000000000000001" + "00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := iso8583.Unpack([]byte(tt.raw))
			var bad *iso8583.BadInputError
			if !errors.As(err, &bad) || bad.Reason != iso8583.ReasonMalformed {
				t.Fatalf("Unpack = %v, want a malformed BadInputError", err)
			}
			if strings.Contains(err.Error(), card.PAN) {
				t.Errorf("error leaks the card number: %v", err)
			}
		})
	}
}

func TestZeroAmountIsPresent(t *testing.T) {
	raw := pack(t, iso8583.Fields{MTI: "0210", Amount: "0", STAN: "000001", TerminalID: "T1", ResponseCode: "13"}, nil)
	got, err := iso8583.Unpack([]byte(raw))
	if err != nil || got.Amount != "0" {
		t.Fatalf("Unpack = %q, %v; want amount 0", got.Amount, err)
	}
}

func TestReadFrame(t *testing.T) {
	frame := func(n int, body string) []byte {
		b := binary.BigEndian.AppendUint16(nil, uint16(n))
		return append(b, body...)
	}
	ok, err := iso8583.ReadFrame(bytes.NewReader(frame(5, "hello")))
	if err != nil || string(ok) != "hello" {
		t.Fatalf("ReadFrame = %q, %v", ok, err)
	}
	tests := []struct {
		name   string
		in     []byte
		reason string
	}{
		{"ZeroLength", frame(0, ""), iso8583.ReasonBadLength},
		{"LongerThanTheSpecAllows", frame(iso8583.MaxMessageLength+1, ""), iso8583.ReasonOversize},
		{"MaxUint16", frame(65535, "x"), iso8583.ReasonOversize},
		{"BodyCutShort", frame(10, "abc"), iso8583.ReasonBadLength},
		{"HeaderCutShort", []byte{0}, iso8583.ReasonBadLength},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := iso8583.ReadFrame(bytes.NewReader(tt.in))
			var bad *iso8583.BadInputError
			if !errors.As(err, &bad) || bad.Reason != tt.reason {
				t.Fatalf("ReadFrame = %v, want reason %s", err, tt.reason)
			}
		})
	}
	if iso8583.MaxMessageLength < 1000 || iso8583.MaxMessageLength > 65535 {
		t.Errorf("MaxMessageLength = %d", iso8583.MaxMessageLength)
	}
}

func TestBuildersRefuseBadInput(t *testing.T) {
	tests := []struct {
		name string
		err  error
	}{
		{"NoSTAN", first(iso8583.Purchase{Trace: iso8583.Trace{RRN: "R1", Time: sentAt}, Card: card, Amount: 1, Currency: "USD"}.Fields(terminal))},
		{"LongRRN", first(iso8583.Purchase{Trace: iso8583.Trace{STAN: 1, RRN: "1234567890123", Time: sentAt}, Card: card, Amount: 1, Currency: "USD"}.Fields(terminal))},
		{"PaddedRRN", first(iso8583.Purchase{Trace: iso8583.Trace{STAN: 1, RRN: " R1", Time: sentAt}, Card: card, Amount: 1, Currency: "USD"}.Fields(terminal))},
		{"UnknownCurrency", first(iso8583.Purchase{Trace: trace(1), Card: card, Amount: 1, Currency: "XXX"}.Fields(terminal))},
		{"ZeroAmount", first(iso8583.Purchase{Trace: trace(1), Card: card, Currency: "USD"}.Fields(terminal))},
		{"CompletionWithoutCode", first(iso8583.Completion{Trace: trace(1), Card: card, Amount: 1, Currency: "USD", Original: f2o("0100", 1, "1121101500")}.Fields(terminal))},
		{"RefundWithoutOriginal", first(iso8583.Refund{Trace: trace(1), Card: card, Amount: 1, Currency: "USD"}.Fields(terminal))},
		{"ReversalReason", first(iso8583.Reversal{Trace: trace(1), Card: card, Amount: 1, Currency: "USD", Reason: "05", Original: f2o("0200", 1, "1121101500")}.Fields(terminal))},
		{"LongTerminal", first(iso8583.Purchase{Trace: trace(1), Card: card, Amount: 1, Currency: "USD"}.Fields(iso8583.Terminal{TerminalID: "123456789", MerchantID: "m"}))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.err == nil {
				t.Fatal("built")
			}
			if strings.Contains(tt.err.Error(), card.PAN) {
				t.Errorf("error leaks the card number: %v", tt.err)
			}
		})
	}
}

func first(_ iso8583.Fields, err error) error { return err }

func TestOriginal(t *testing.T) {
	o := iso8583.Original{MTI: "0100", STAN: 123, TransmissionTime: "1121101500"}
	de := o.DataElements()
	if de != "0100"+"000123"+"1121101500"+strings.Repeat("0", 22) || len(de) != 42 {
		t.Fatalf("DataElements = %q", de)
	}
	back, err := iso8583.ParseOriginal(de)
	if err != nil || back != o {
		t.Fatalf("ParseOriginal = %+v, %v", back, err)
	}
	for _, bad := range []string{"", "0100", de[:41], strings.Replace(de, "0", "A", 1), "0100000000" + de[10:]} {
		if _, err := iso8583.ParseOriginal(bad); err == nil {
			t.Errorf("ParseOriginal(%q) accepted", bad)
		}
	}
	c := iso8583.Completion{Trace: trace(5), Repeat: true}
	if got := c.Ref(); got.MTI != "0220" || got.STAN != 5 || got.TransmissionTime != "1121101500" {
		t.Errorf("a repeat's Ref = %+v, want its first MTI 0220", got)
	}
}

func TestCurrency(t *testing.T) {
	for alpha, num := range map[string]string{"USD": "840", "EUR": "978", "GBP": "826", "JPY": "392", "AUD": "036"} {
		if got, ok := iso8583.CurrencyNumeric(alpha); !ok || got != num {
			t.Errorf("CurrencyNumeric(%s) = %q, %v", alpha, got, ok)
		}
		if got, ok := iso8583.CurrencyAlpha(num); !ok || got != alpha {
			t.Errorf("CurrencyAlpha(%s) = %q, %v", num, got, ok)
		}
	}
	if _, ok := iso8583.CurrencyAlpha("999"); ok {
		t.Error("CurrencyAlpha(999) found")
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		code    string
		kind    gateway.Kind // -1: no error
		errCode string
		decline string
	}{
		{"00", -1, "", ""},
		{"05", -1, "", "do_not_honor"},
		{"14", -1, "", "invalid_card"},
		{"41", -1, "", "lost_or_stolen"},
		{"43", -1, "", "lost_or_stolen"},
		{"51", -1, "", "insufficient_funds"},
		{"54", -1, "", "expired_card"},
		{"03", gateway.KindUnauthorized, "invalid_merchant", ""},
		{"12", gateway.KindRejected, "invalid_transaction", ""},
		{"13", gateway.KindRejected, "invalid_amount", ""},
		{"30", gateway.KindRejected, "format_error", ""},
		{"91", gateway.KindNotProcessed, "not_processed", ""},
		{"96", gateway.KindUnknown, "system_malfunction", ""},
		{"08", gateway.KindUnknown, "unknown_response_code", ""}, // approves in some networks
		{"XX", gateway.KindUnknown, "unknown_response_code", ""},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			ans := iso8583.Answer{MTI: "0210", ResponseCode: tt.code}
			err := iso8583.Classify(ans, "switch-a", "tcp://x:1")
			if got := ans.DeclineCode(); got != tt.decline {
				t.Errorf("DeclineCode = %q, want %q", got, tt.decline)
			}
			if tt.kind == -1 {
				if err != nil {
					t.Fatalf("Classify = %v, want nil", err)
				}
				return
			}
			e := gateway.AsError(err)
			if e == nil || e.Kind != tt.kind || e.Code != tt.errCode || e.Gateway != "switch-a" {
				t.Fatalf("Classify = %#v, want kind %v code %s", e, tt.kind, tt.errCode)
			}
			var re *iso8583.ResponseError
			if !errors.As(err, &re) || re.Code != tt.code {
				t.Errorf("no ResponseError with code %s in %v", tt.code, err)
			}
			if got := gateway.NothingDone(err); got != (tt.kind != gateway.KindUnknown) {
				t.Errorf("NothingDone = %v", got)
			}
		})
	}
}

func TestFieldsNeverShowTheCardNumber(t *testing.T) {
	f, err := iso8583.Purchase{Trace: trace(42), Card: card, Amount: 1250, Currency: "USD"}.Fields(terminal)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("msg", "fields", f)
	for _, s := range []string{f.String(), fmt.Sprintf("%v %+v %#v", f, f, f), logs.String()} {
		if strings.Contains(s, card.PAN) {
			t.Errorf("card number in %q", s)
		}
		if !strings.Contains(s, "4242") {
			t.Errorf("no last four digits in %q", s)
		}
	}
}

func TestCheckRequest(t *testing.T) {
	f, err := iso8583.Purchase{Trace: trace(42), Card: card, Amount: 1250, Currency: "USD"}.Fields(terminal)
	if err != nil {
		t.Fatal(err)
	}
	if err := iso8583.CheckRequest(f); err != nil {
		t.Fatalf("CheckRequest(purchase) = %v", err)
	}
	f.Expiry, f.Currency = "", ""
	if err := iso8583.CheckRequest(f); err == nil || !strings.Contains(err.Error(), "14, 49") {
		t.Errorf("CheckRequest without 14 and 49 = %v", err)
	}
	if err := iso8583.CheckRequest(iso8583.Fields{MTI: "0210"}); err == nil {
		t.Error("CheckRequest accepted an answer")
	}
}
