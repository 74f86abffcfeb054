package iso8583

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"

	moov "github.com/moov-io/iso8583"
	"github.com/moov-io/iso8583/field"
)

// Fields are the data elements of one message of the profile, as text
// without the wire's padding: "" is an absent field. It is the layer
// between the typed requests and answers of this package and moov-io's
// message; the simulator in gateway/banksim reads requests in this form.
//
// Fields holds a card number (field 2): its String and LogValue mask it.
type Fields struct {
	MTI              string
	PAN              string // 2: card number
	ProcessingCode   string // 3: "000000" purchase or authorization, "200000" refund
	Amount           string // 4: minor units as digits, no padding ("1250")
	TransmissionTime string // 7: MMDDhhmmss, UTC
	STAN             string // 11: 6 digits
	LocalTime        string // 12: hhmmss
	LocalDate        string // 13: MMDD
	Expiry           string // 14: YYMM
	EntryMode        string // 22: POS entry mode, "010"
	RRN              string // 37: retrieval reference number, up to 12 characters
	AuthCode         string // 38: authorization code; "Y3" in an offline advice
	ResponseCode     string // 39: response code; reversal reason in a 0420
	TerminalID       string // 41: up to 8 characters
	MerchantID       string // 42: up to 15 characters
	Currency         string // 49: ISO 4217 numeric ("840")
	NetworkCode      string // 70: "001" sign-on, "301" echo
	Original         string // 90: original data elements, 42 digits
}

// fieldKind says how a field's text is checked on receipt.
type fieldKind int

const (
	numeric   fieldKind = iota // digits only
	printable                  // printable ASCII, spaces trimmed
)

type fieldRef struct {
	id    int
	kind  fieldKind
	value *string
}

// refs lists the profile's fields of f in field order.
func (f *Fields) refs() []fieldRef {
	return []fieldRef{
		{2, numeric, &f.PAN},
		{3, numeric, &f.ProcessingCode},
		{4, numeric, &f.Amount},
		{7, numeric, &f.TransmissionTime},
		{11, numeric, &f.STAN},
		{12, numeric, &f.LocalTime},
		{13, numeric, &f.LocalDate},
		{14, numeric, &f.Expiry},
		{22, numeric, &f.EntryMode},
		{37, printable, &f.RRN},
		{38, printable, &f.AuthCode},
		{39, printable, &f.ResponseCode},
		{41, printable, &f.TerminalID},
		{42, printable, &f.MerchantID},
		{49, numeric, &f.Currency},
		{70, numeric, &f.NetworkCode},
		{90, numeric, &f.Original},
	}
}

// Message returns f as a moov-io message of [Spec].
func (f *Fields) Message() (*moov.Message, error) {
	if !isDigits(f.MTI, 4) {
		return nil, fmt.Errorf("iso8583: MTI %q is not 4 digits", f.MTI)
	}
	m := moov.NewMessage(Spec)
	m.MTI(f.MTI)
	for _, r := range f.refs() {
		if *r.value == "" {
			continue
		}
		if err := checkText(r, *r.value); err != nil {
			return nil, fmt.Errorf("iso8583: %w", err)
		}
		if err := m.Field(r.id, *r.value); err != nil {
			return nil, fmt.Errorf("iso8583: field %d: %w", r.id, err)
		}
	}
	return m, nil
}

// Pack encodes f under [Spec]. The error names fields, never their values.
func (f *Fields) Pack() ([]byte, error) {
	m, err := f.Message()
	if err != nil {
		return nil, err
	}
	b, err := m.Pack()
	if err != nil {
		// moov-io's pack errors name the field and its lengths, not
		// the value.
		return nil, fmt.Errorf("iso8583: pack %s: %w", f.MTI, err)
	}
	if len(b) > MaxMessageLength {
		return nil, fmt.Errorf("iso8583: pack %s: %d bytes above the spec's %d", f.MTI, len(b), MaxMessageLength)
	}
	return b, nil
}

// Unpack decodes one message (without its length header). Anything that
// breaks [Spec] or the profile's formats, or bytes left over after the
// last field, is a *BadInputError with ReasonMalformed. Fields the
// profile does not use are accepted and ignored.
func Unpack(raw []byte) (Fields, error) {
	m := moov.NewMessage(Spec)
	if err := m.Unpack(raw); err != nil {
		// moov-io's UnpackError carries the raw message (card number
		// included): keep only its description.
		return Fields{}, &BadInputError{Reason: ReasonMalformed, Err: errors.New(safeUnpackError(err))}
	}
	return FromMessage(m, len(raw))
}

// FromMessage reads the profile's fields out of a message unpacked under
// [Spec]. rawLength, when positive, is the length of the bytes it was
// unpacked from: a message that used fewer has trailing bytes and is
// malformed.
func FromMessage(m *moov.Message, rawLength int) (Fields, error) {
	all := m.GetFields()
	if rawLength > 0 {
		used := 0
		for _, fl := range all {
			p, err := fl.Pack()
			if err != nil {
				return Fields{}, badInput(ReasonMalformed, "repack field: %v", err)
			}
			used += len(p)
		}
		if used != rawLength {
			return Fields{}, badInput(ReasonMalformed, "%d bytes after the last field", rawLength-used)
		}
	}
	var f Fields
	mti, err := m.GetMTI()
	if err != nil || !isDigits(mti, 4) {
		return Fields{}, badInput(ReasonMalformed, "MTI is not 4 digits")
	}
	f.MTI = mti
	for _, r := range f.refs() {
		fl, ok := all[r.id]
		if !ok {
			continue
		}
		v, err := text(r.id, fl)
		if err != nil {
			return Fields{}, badInput(ReasonMalformed, "field %d: %v", r.id, err)
		}
		if err := checkText(r, v); err != nil {
			return Fields{}, &BadInputError{Reason: ReasonMalformed, Err: err}
		}
		*r.value = v
	}
	return f, nil
}

// text returns a field's value without padding. Numeric fields come back
// at their fixed width ("000000", not moov-io's "0"); an amount of zero,
// which the left padding strips to nothing, is "0".
func text(id int, fl field.Field) (string, error) {
	if n, ok := fl.(*field.Numeric); ok {
		return fmt.Sprintf("%0*d", fl.Spec().Length, n.Value()), nil
	}
	s, err := fl.String()
	if err != nil {
		return "", err
	}
	switch {
	case id == 4 && s == "":
		return "0", nil
	case isAlphanumeric(id):
		// Left-justified and padded with spaces: trim. Leading spaces
		// are trimmed too, for a peer that right-justifies.
		return strings.Trim(s, " "), nil
	}
	return s, nil
}

func isAlphanumeric(id int) bool {
	for _, a := range alphanumeric {
		if a == id {
			return true
		}
	}
	return false
}

// checkText checks a field's text against its kind. The error names the
// field, not its value.
func checkText(r fieldRef, v string) error {
	switch r.kind {
	case numeric:
		if !isDigits(v, 0) {
			return fmt.Errorf("field %d is not numeric", r.id)
		}
	case printable:
		for i := 0; i < len(v); i++ {
			if v[i] < 0x20 || v[i] > 0x7e {
				return fmt.Errorf("field %d has a non-printable character", r.id)
			}
		}
	}
	return nil
}

// isDigits reports whether s is all ASCII digits and, when n > 0,
// exactly n long. The empty string is not digits.
func isDigits(s string, n int) bool {
	if s == "" || (n > 0 && len(s) != n) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// safeUnpackError keeps the description of a moov-io unpack error and
// drops the raw message it carries.
func safeUnpackError(err error) string {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) && ue.Unwrap() != nil {
		return maskDigits(ue.Unwrap().Error())
	}
	return maskDigits(err.Error())
}

// maskDigits hides every run of 12 or more digits: a description of a
// failed field could quote a card number.
func maskDigits(s string) string {
	var b strings.Builder
	run := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] >= '0' && s[i] <= '9' {
			run++
			continue
		}
		if run >= 12 {
			b.WriteString("[redacted]")
		} else {
			b.WriteString(s[i-run : i])
		}
		run = 0
		if i < len(s) {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// maskedPAN is the card number's last four digits.
func maskedPAN(pan string) string {
	if pan == "" {
		return ""
	}
	if len(pan) <= 4 {
		return "****"
	}
	return "****" + pan[len(pan)-4:]
}

// String describes f with the card number masked.
func (f Fields) String() string {
	var b strings.Builder
	b.WriteString(f.MTI)
	for _, r := range f.refs() {
		if *r.value == "" {
			continue
		}
		v := *r.value
		if r.id == 2 {
			v = maskedPAN(v)
		}
		fmt.Fprintf(&b, " %d=%q", r.id, v)
	}
	return b.String()
}

// GoString masks the card number for %#v too.
func (f Fields) GoString() string { return f.String() }

// LogValue masks the card number in structured logs.
func (f Fields) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("mti", f.MTI)}
	for _, a := range []struct{ k, v string }{
		{"stan", f.STAN}, {"terminal_id", f.TerminalID}, {"rrn", f.RRN},
		{"processing_code", f.ProcessingCode}, {"amount", f.Amount},
		{"response_code", f.ResponseCode}, {"network_code", f.NetworkCode},
		{"original", f.Original}, {"card", maskedPAN(f.PAN)},
	} {
		if a.v != "" {
			attrs = append(attrs, slog.String(a.k, a.v))
		}
	}
	return slog.GroupValue(attrs...)
}
