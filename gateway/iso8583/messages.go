package iso8583

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"storepay/gateway"
)

// The message types of the profile.
const (
	MTIAuthorization         = "0100" // pre-authorization
	MTIAuthorizationResponse = "0110"
	MTIFinancial             = "0200" // sale or refund
	MTIFinancialResponse     = "0210"
	MTIAdvice                = "0220" // completion or offline advice
	MTIAdviceRepeat          = "0221"
	MTIAdviceResponse        = "0230"
	MTIReversal              = "0420" // reversal advice
	MTIReversalRepeat        = "0421"
	MTIReversalResponse      = "0430"
	MTINetwork               = "0800" // sign-on, echo
	MTINetworkResponse       = "0810"
)

// Field values the profile fixes.
const (
	ProcessingPurchase = "000000" // field 3 of a sale, authorization or completion
	ProcessingRefund   = "200000" // field 3 of a refund
	NetworkSignOn      = "001"    // field 70
	NetworkEcho        = "301"    // field 70
	EntryMode          = "010"    // field 22
	AuthCodeOffline    = "Y3"     // field 38 of an offline advice
)

// Reversal reasons: field 39 of a 0420.
const (
	ReasonCustomerCancellation = "17" // a void, or a cancel
	ReasonNoAnswer             = "68" // the operation's answer did not come in time
)

// ResponseMTI returns the MTI that answers a request's MTI, repeats
// included (0221 is answered by 0230), or "" for a type that is not a
// request of the profile.
func ResponseMTI(mti string) string {
	switch mti {
	case MTIAuthorization:
		return MTIAuthorizationResponse
	case MTIFinancial:
		return MTIFinancialResponse
	case MTIAdvice, MTIAdviceRepeat:
		return MTIAdviceResponse
	case MTIReversal, MTIReversalRepeat:
		return MTIReversalResponse
	case MTINetwork:
		return MTINetworkResponse
	}
	return ""
}

// IsResponseMTI reports whether mti answers a request of the profile.
func IsResponseMTI(mti string) bool {
	switch mti {
	case MTIAuthorizationResponse, MTIFinancialResponse, MTIAdviceResponse, MTIReversalResponse, MTINetworkResponse:
		return true
	}
	return false
}

// FirstMTI returns the MTI of the first sending of a repeat (0221 →
// 0220, 0421 → 0420); other MTIs come back unchanged. A repeat carries
// its first sending's 11, 7 and 37, so field 90 names the first MTI.
func FirstMTI(mti string) string {
	switch mti {
	case MTIAdviceRepeat:
		return MTIAdvice
	case MTIReversalRepeat:
		return MTIReversal
	}
	return mti
}

// TimeLayout is the layout of field 7 (MMDDhhmmss, UTC).
const TimeLayout = "0102150405"

// Trace identifies one message of a bank operation. The caller chooses it
// and writes it ahead durably before the message is sent: the STAN from
// its [STANAllocator], an RRN of its own (one per bank operation), and the
// transmission time. Every repeat of the operation (0221, 0421, or a
// resend of a 0100 or 0200 whose answer never came) carries the same
// Trace, so that the bank recognizes it: a bank does the work of an RRN at
// most once per terminal.
type Trace struct {
	STAN STAN
	// RRN is the retrieval reference number (field 37): 1 to 12
	// printable characters without leading or trailing spaces. A
	// reversal is its own operation with its own RRN.
	RRN string
	// Time is the transmission time: field 7 in UTC to the second, and
	// fields 12 and 13 in the terminal's location.
	Time time.Time
}

func (t Trace) check() error {
	switch {
	case !t.STAN.Valid():
		return fmt.Errorf("STAN %d is not 1 to 999999", t.STAN)
	case t.RRN == "" || len(t.RRN) > 12 || strings.Trim(t.RRN, " ") != t.RRN:
		return errors.New("RRN must be 1 to 12 characters without leading or trailing spaces")
	case !printableASCII(t.RRN):
		return errors.New("RRN has a non-printable character")
	case t.Time.IsZero():
		return errors.New("trace without a transmission time")
	}
	return nil
}

// Original names an earlier message in field 90 (original data elements):
// a completion names its pre-authorization, a refund the message that
// charged the card, a reversal the operation it reverses. The caller
// persists it with the operation: it cannot be rebuilt later.
type Original struct {
	// MTI of the first sending (0220, not 0221).
	MTI  string `json:"mti"`
	STAN STAN   `json:"stan"`
	// TransmissionTime is its field 7, MMDDhhmmss.
	TransmissionTime string `json:"transmission_time"`
}

// originalOf returns the Original that names a message sent with mti and
// trace.
func originalOf(mti string, t Trace) Original {
	return Original{MTI: FirstMTI(mti), STAN: t.STAN, TransmissionTime: t.Time.UTC().Format(TimeLayout)}
}

// DataElements returns field 90: MTI (4), STAN (6), field 7 (10), then
// 22 zeros.
func (o Original) DataElements() string {
	return o.MTI + o.STAN.String() + o.TransmissionTime + strings.Repeat("0", 22)
}

// Check reports what is wrong with o, or nil.
func (o Original) Check() error {
	switch {
	case !isDigits(o.MTI, 4):
		return fmt.Errorf("original MTI %q is not 4 digits", o.MTI)
	case !o.STAN.Valid():
		return fmt.Errorf("original STAN %d is not 1 to 999999", o.STAN)
	case !isDigits(o.TransmissionTime, 10):
		return fmt.Errorf("original transmission time %q is not MMDDhhmmss", o.TransmissionTime)
	}
	return nil
}

// ParseOriginal reads field 90. The 22 digits after field 7 (the
// acquirer and forwarding institutions) are ignored.
func ParseOriginal(s string) (Original, error) {
	if !isDigits(s, 42) {
		return Original{}, errors.New("iso8583: field 90 is not 42 digits")
	}
	stan, err := ParseSTAN(s[4:10])
	if err != nil {
		return Original{}, err
	}
	return Original{MTI: s[:4], STAN: stan, TransmissionTime: s[10:20]}, nil
}

// Terminal is who sends: the terminal_id (field 41, up to 8 characters)
// and merchant_id (field 42, up to 15) of the gateway's config, and the
// location of the local time in fields 12 and 13 (nil: time.Local).
type Terminal struct {
	TerminalID string
	MerchantID string
	Location   *time.Location
}

func (t Terminal) check() error {
	switch {
	case t.TerminalID == "" || len(t.TerminalID) > 8 || strings.Trim(t.TerminalID, " ") != t.TerminalID || !printableASCII(t.TerminalID):
		return errors.New("terminal_id must be 1 to 8 printable characters without surrounding spaces")
	case t.MerchantID == "" || len(t.MerchantID) > 15 || strings.Trim(t.MerchantID, " ") != t.MerchantID || !printableASCII(t.MerchantID):
		return errors.New("merchant_id must be 1 to 15 printable characters without surrounding spaces")
	}
	return nil
}

// payment are the fields every financial message carries: 2, 3, 4, 7,
// 11, 12, 13, 14, 22, 37, 41, 42, 49.
func (t Terminal) payment(mti, processing string, tr Trace, card gateway.Card, amount int64, currency string) (Fields, error) {
	if err := t.check(); err != nil {
		return Fields{}, err
	}
	if err := tr.check(); err != nil {
		return Fields{}, err
	}
	if !isDigits(card.PAN, 0) || len(card.PAN) < 12 || len(card.PAN) > 19 {
		return Fields{}, errors.New("card number must be 12 to 19 digits")
	}
	if card.ExpMonth < 1 || card.ExpMonth > 12 || card.ExpYear < 2000 || card.ExpYear > 2099 {
		return Fields{}, errors.New("card expiry out of range")
	}
	if amount <= 0 || amount > 999_999_999_999 {
		return Fields{}, errors.New("amount must be 1 to 999999999999 minor units")
	}
	cur, ok := CurrencyNumeric(currency)
	if !ok {
		return Fields{}, fmt.Errorf("currency %q has no ISO 4217 numeric code here", currency)
	}
	loc := t.Location
	if loc == nil {
		loc = time.Local
	}
	local := tr.Time.In(loc)
	return Fields{
		MTI:              mti,
		PAN:              card.PAN,
		ProcessingCode:   processing,
		Amount:           strconv.FormatInt(amount, 10),
		TransmissionTime: tr.Time.UTC().Format(TimeLayout),
		STAN:             tr.STAN.String(),
		LocalTime:        local.Format("150405"),
		LocalDate:        local.Format("0102"),
		Expiry:           fmt.Sprintf("%02d%02d", card.ExpYear%100, card.ExpMonth),
		EntryMode:        EntryMode,
		RRN:              tr.RRN,
		TerminalID:       t.TerminalID,
		MerchantID:       t.MerchantID,
		Currency:         cur,
	}, nil
}

// Authorization is a pre-authorization (0100): the amount is held on the
// card, to be captured by a [Completion]. Amounts are int64 minor units
// of Currency (ISO 4217 alphabetic, sent as its numeric code).
type Authorization struct {
	Trace    Trace
	Card     gateway.Card
	Amount   int64
	Currency string
}

// Fields builds the 0100.
func (r Authorization) Fields(t Terminal) (Fields, error) {
	return t.payment(MTIAuthorization, ProcessingPurchase, r.Trace, r.Card, r.Amount, r.Currency)
}

// Ref returns the Original that names this message in a later field 90.
func (r Authorization) Ref() Original { return originalOf(MTIAuthorization, r.Trace) }

// Purchase is a sale (0200, processing code 000000): authorized and
// captured at once.
type Purchase struct {
	Trace    Trace
	Card     gateway.Card
	Amount   int64
	Currency string
}

// Fields builds the 0200.
func (r Purchase) Fields(t Terminal) (Fields, error) {
	return t.payment(MTIFinancial, ProcessingPurchase, r.Trace, r.Card, r.Amount, r.Currency)
}

// Ref returns the Original that names this message in a later field 90.
func (r Purchase) Ref() Original { return originalOf(MTIFinancial, r.Trace) }

// Refund gives back part or all of what a card was charged (0200,
// processing code 200000). Original names the message that charged it:
// the sale, the completion or the offline advice.
type Refund struct {
	Trace    Trace
	Card     gateway.Card
	Amount   int64
	Currency string
	Original Original
}

// Fields builds the 0200 refund.
func (r Refund) Fields(t Terminal) (Fields, error) {
	f, err := t.payment(MTIFinancial, ProcessingRefund, r.Trace, r.Card, r.Amount, r.Currency)
	if err != nil {
		return Fields{}, err
	}
	if err := r.Original.Check(); err != nil {
		return Fields{}, err
	}
	f.Original = r.Original.DataElements()
	return f, nil
}

// Ref returns the Original that names this message in a later field 90
// (a reversal of the refund).
func (r Refund) Ref() Original { return originalOf(MTIFinancial, r.Trace) }

// Completion captures a pre-authorization, tip included (0220, or its
// repeat 0221): AuthCode is the authorization's code (field 38), Original
// names the 0100. The amount may exceed the authorized one by at most
// 20%.
type Completion struct {
	Trace    Trace
	Card     gateway.Card
	Amount   int64
	Currency string
	AuthCode string
	Original Original
	// Repeat sends it as 0221: the 0220 (same Trace) was sent before and
	// its answer did not come, or was 91 or 96.
	Repeat bool
}

// Ref returns the Original that names this message in a later field 90
// (a refund of what it captured, a reversal of it): always MTI 0220.
func (r Completion) Ref() Original { return originalOf(MTIAdvice, r.Trace) }

// Fields builds the 0220 or 0221.
func (r Completion) Fields(t Terminal) (Fields, error) {
	f, err := t.payment(advice(r.Repeat), ProcessingPurchase, r.Trace, r.Card, r.Amount, r.Currency)
	if err != nil {
		return Fields{}, err
	}
	if r.AuthCode == "" || len(r.AuthCode) > 6 || !printableASCII(r.AuthCode) {
		return Fields{}, errors.New("completion needs the authorization's code (1 to 6 characters)")
	}
	if err := r.Original.Check(); err != nil {
		return Fields{}, err
	}
	f.AuthCode = r.AuthCode
	f.Original = r.Original.DataElements()
	return f, nil
}

// OfflineAdvice forwards a payment accepted offline, without the bank
// (0220 with field 38 = Y3, or its repeat 0221). A decline is
// declined_after_forward.
type OfflineAdvice struct {
	Trace    Trace
	Card     gateway.Card
	Amount   int64
	Currency string
	// Repeat sends it as 0221.
	Repeat bool
}

// Fields builds the 0220 or 0221.
func (r OfflineAdvice) Fields(t Terminal) (Fields, error) {
	f, err := t.payment(advice(r.Repeat), ProcessingPurchase, r.Trace, r.Card, r.Amount, r.Currency)
	if err != nil {
		return Fields{}, err
	}
	f.AuthCode = AuthCodeOffline
	return f, nil
}

// Ref returns the Original that names this message in a later field 90.
func (r OfflineAdvice) Ref() Original { return originalOf(MTIAdvice, r.Trace) }

// Reversal reverses the operation Original names (0420, or its repeat
// 0421): a void or cancel (Reason 17), or an operation whose answer did
// not come in time (Reason 68). It is its own operation, with its own
// RRN. Card, Amount, Currency and ProcessingCode are the original's ("":
// 000000).
type Reversal struct {
	Trace          Trace
	Card           gateway.Card
	Amount         int64
	Currency       string
	ProcessingCode string
	Reason         string
	Original       Original
	// Repeat sends it as 0421.
	Repeat bool
}

// Fields builds the 0420 or 0421: fields 2, 3, 4, 7, 11, 37, 39, 41,
// 42, 49 and 90.
func (r Reversal) Fields(t Terminal) (Fields, error) {
	mti := MTIReversal
	if r.Repeat {
		mti = MTIReversalRepeat
	}
	pc := r.ProcessingCode
	if pc == "" {
		pc = ProcessingPurchase
	}
	if pc != ProcessingPurchase && pc != ProcessingRefund {
		return Fields{}, fmt.Errorf("reversal of processing code %q", pc)
	}
	f, err := t.payment(mti, pc, r.Trace, r.Card, r.Amount, r.Currency)
	if err != nil {
		return Fields{}, err
	}
	if r.Reason != ReasonCustomerCancellation && r.Reason != ReasonNoAnswer {
		return Fields{}, fmt.Errorf("reversal reason %q is neither 17 nor 68", r.Reason)
	}
	if err := r.Original.Check(); err != nil {
		return Fields{}, err
	}
	f.LocalTime, f.LocalDate, f.Expiry, f.EntryMode = "", "", "", ""
	f.ResponseCode = r.Reason
	f.Original = r.Original.DataElements()
	return f, nil
}

// Ref returns the Original that names this message.
func (r Reversal) Ref() Original { return originalOf(MTIReversal, r.Trace) }

func advice(repeat bool) string {
	if repeat {
		return MTIAdviceRepeat
	}
	return MTIAdvice
}

// NetworkFields builds a 0800: fields 7, 11, 41 and 70 (code
// NetworkSignOn or NetworkEcho).
func NetworkFields(t Terminal, code string, stan STAN, at time.Time) (Fields, error) {
	if err := t.check(); err != nil {
		return Fields{}, err
	}
	if !stan.Valid() {
		return Fields{}, fmt.Errorf("STAN %d is not 1 to 999999", stan)
	}
	if !isDigits(code, 3) {
		return Fields{}, fmt.Errorf("network management code %q is not 3 digits", code)
	}
	return Fields{
		MTI:              MTINetwork,
		TransmissionTime: at.UTC().Format(TimeLayout),
		STAN:             stan.String(),
		TerminalID:       t.TerminalID,
		NetworkCode:      code,
	}, nil
}

// Answer is the bank's answer to one request.
type Answer struct {
	// MTI of the answer (0110, 0210, 0230, 0430, 0810).
	MTI string
	// Sent names the request as sent (its first MTI, STAN and field 7):
	// what a later field 90 names. Persist it with the operation.
	Sent Original
	// RRN is the request's, echoed.
	RRN string
	// ResponseCode is field 39.
	ResponseCode string
	// AuthCode is field 38 (approvals), trimmed.
	AuthCode string
}

// Approved reports whether the answer is 00.
func (a Answer) Approved() bool { return a.ResponseCode == CodeApproved }

// DeclineCode returns the contract's decline code when the answer
// declines the card (05, 14, 41, 43, 51, 54), else "".
func (a Answer) DeclineCode() string {
	d, _ := DeclineCode(a.ResponseCode)
	return d
}

// CheckAnswer checks that ans answers req as the profile says: the
// answer's MTI, the same 11 and 41, and the same 37 when the request had
// one, and a response code. A mismatch is a *BadInputError with
// ReasonMalformed.
func CheckAnswer(req, ans Fields) error {
	switch {
	case ans.MTI != ResponseMTI(req.MTI):
		return badInput(ReasonMalformed, "answer %s to a %s", ans.MTI, req.MTI)
	case ans.STAN != req.STAN || ans.TerminalID != req.TerminalID:
		return badInput(ReasonMalformed, "answer for another STAN or terminal")
	case req.RRN != "" && ans.RRN != req.RRN:
		return badInput(ReasonMalformed, "answer with another RRN")
	case len(ans.ResponseCode) != 2:
		return badInput(ReasonMalformed, "answer without a 2-character response code")
	}
	return nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// requiredFields are the fields each request of the profile carries.
var requiredFields = func() map[string][]int {
	payment := []int{2, 3, 4, 7, 11, 12, 13, 14, 22, 37, 41, 42, 49}
	reversal := []int{2, 3, 4, 7, 11, 37, 39, 41, 42, 49, 90}
	return map[string][]int{
		MTIAuthorization: payment, MTIFinancial: payment,
		MTIAdvice: payment, MTIAdviceRepeat: payment,
		MTIReversal: reversal, MTIReversalRepeat: reversal,
		MTINetwork: {7, 11, 41, 70},
	}
}()

// CheckRequest reports which fields the profile requires of f's MTI are
// missing, or that f is not a request of the profile. It does not look at
// the fields' values beyond their presence, nor at the fields a message
// needs for its function (38 and 90 of a completion, 90 of a refund).
func CheckRequest(f Fields) error {
	req, ok := requiredFields[f.MTI]
	if !ok {
		return fmt.Errorf("iso8583: %s is not a request of the profile", f.MTI)
	}
	var missing []string
	for _, id := range req {
		if f.Get(id) == "" {
			missing = append(missing, strconv.Itoa(id))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("iso8583: %s without field %s", f.MTI, strings.Join(missing, ", "))
	}
	return nil
}

// Get returns the text of field id, "" when absent or not a field of the
// profile. Get(0) is the MTI.
func (f *Fields) Get(id int) string {
	if id == 0 {
		return f.MTI
	}
	for _, r := range f.refs() {
		if r.id == id {
			return *r.value
		}
	}
	return ""
}
