package iso8583

import (
	"fmt"

	"storepay/gateway"
)

// Response codes (field 39) of the profile.
const (
	CodeApproved           = "00" // approved, or advice accepted
	CodeInvalidMerchant    = "03" // a configuration fault, like HTTP 401
	CodeDoNotHonor         = "05"
	CodeInvalidTransaction = "12" // an original the bank does not know: nothing done
	CodeInvalidAmount      = "13" // above the 20% allowance, or above what is left: nothing done
	CodeInvalidCard        = "14"
	CodeFormatError        = "30" // nothing done
	CodeLostCard           = "41"
	CodeStolenCard         = "43"
	CodeInsufficientFunds  = "51"
	CodeExpiredCard        = "54"
	CodeUnavailable        = "91" // issuer or switch unavailable: nothing done
	CodeMalfunction        = "96" // system malfunction: outcome unknown
)

// DeclineCode maps a response code that declines the card to the
// contract's decline code (do_not_honor, invalid_card, lost_or_stolen,
// insufficient_funds, expired_card). ok is false for any other code.
func DeclineCode(responseCode string) (code string, ok bool) {
	switch responseCode {
	case CodeDoNotHonor:
		return "do_not_honor", true
	case CodeInvalidCard:
		return "invalid_card", true
	case CodeLostCard, CodeStolenCard:
		return "lost_or_stolen", true
	case CodeInsufficientFunds:
		return "insufficient_funds", true
	case CodeExpiredCard:
		return "expired_card", true
	}
	return "", false
}

// ResponseCode returns the response code that declines a card with the
// contract's decline code: the inverse of [DeclineCode] (lost_or_stolen is
// 41). ok is false for another code.
func ResponseCode(declineCode string) (code string, ok bool) {
	switch declineCode {
	case "do_not_honor":
		return CodeDoNotHonor, true
	case "invalid_card":
		return CodeInvalidCard, true
	case "lost_or_stolen":
		return CodeLostCard, true
	case "insufficient_funds":
		return CodeInsufficientFunds, true
	case "expired_card":
		return CodeExpiredCard, true
	}
	return "", false
}

// The Code of a *gateway.Error made from a response code.
const (
	ErrCodeInvalidMerchant     = "invalid_merchant"      // 03
	ErrCodeInvalidTransaction  = "invalid_transaction"   // 12
	ErrCodeInvalidAmount       = "invalid_amount"        // 13
	ErrCodeFormatError         = "format_error"          // 30
	ErrCodeNotProcessed        = "not_processed"         // 91
	ErrCodeSystemMalfunction   = "system_malfunction"    // 96
	ErrCodeUnknownResponseCode = "unknown_response_code" // any code the profile does not name
)

// ResponseError is the cause (Err) of a *gateway.Error made from an
// answer: the answer's MTI and its response code.
type ResponseError struct {
	MTI  string
	Code string
}

func (e *ResponseError) Error() string {
	return fmt.Sprintf("%s answered with response code %s", e.MTI, e.Code)
}

// Classify returns the *gateway.Error an answer's response code means, or
// nil for an approval (00) and a decline (05, 14, 41, 43, 51, 54), which
// are answers, not failures:
//
//	03          KindUnauthorized, Code invalid_merchant
//	12, 13, 30  KindRejected, Code invalid_transaction, invalid_amount, format_error
//	91          KindNotProcessed, Code not_processed
//	96          KindUnknown, Code system_malfunction
//	any other   KindUnknown, Code unknown_response_code
//
// A code the profile does not name is an unknown outcome: some networks
// approve with codes other than 00 (08, 10, 11), and reading one as a
// decline would leave an approval nobody reverses.
func Classify(ans Answer, gatewayName, url string) error {
	if ans.Approved() {
		return nil
	}
	if _, ok := DeclineCode(ans.ResponseCode); ok {
		return nil
	}
	e := &gateway.Error{Gateway: gatewayName, URL: url, Err: &ResponseError{MTI: ans.MTI, Code: ans.ResponseCode}}
	switch ans.ResponseCode {
	case CodeInvalidMerchant:
		e.Kind, e.Code = gateway.KindUnauthorized, ErrCodeInvalidMerchant
	case CodeInvalidTransaction:
		e.Kind, e.Code = gateway.KindRejected, ErrCodeInvalidTransaction
	case CodeInvalidAmount:
		e.Kind, e.Code = gateway.KindRejected, ErrCodeInvalidAmount
	case CodeFormatError:
		e.Kind, e.Code = gateway.KindRejected, ErrCodeFormatError
	case CodeUnavailable:
		e.Kind, e.Code = gateway.KindNotProcessed, ErrCodeNotProcessed
	case CodeMalfunction:
		e.Kind, e.Code = gateway.KindUnknown, ErrCodeSystemMalfunction
	default:
		e.Kind, e.Code = gateway.KindUnknown, ErrCodeUnknownResponseCode
	}
	return e
}
