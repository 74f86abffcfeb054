package gateway

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
)

// ErrLookupFailed is the cause of a KindUnavailable error when a repeat
// was held back because the lookup that must come first failed.
var ErrLookupFailed = errors.New("look up what the bank holds before repeating")

// Explanation is a failed bank call told to a manager: a stable code a
// script or a support desk can match, and a sentence a person can act
// on. The raw error (addresses, ports, Go's wording) belongs in the logs
// only: it changes from release to release and means nothing at a till.
type Explanation struct {
	Code string `json:"code"`
	Text string `json:"text"`
}

// Explain turns err into an [Explanation]. A nil error explains to the
// zero Explanation. Every code is a snake_case word; every sentence says
// who failed and whether anything reached the bank, because that is what
// decides whether a payment may be taken again. The sentence never holds
// a card number (bank codes are masked).
func Explain(err error) Explanation {
	if err == nil {
		return Explanation{}
	}
	e := AsError(err)
	if e == nil {
		switch {
		case errors.Is(err, context.Canceled):
			return Explanation{"cancelled", "the request was cancelled before a bank answered"}
		case errors.Is(err, context.DeadlineExceeded):
			return Explanation{"timeout", "no bank answered in time"}
		}
		return Explanation{"internal_error", "storepay hit an internal error; the server log has the details"}
	}
	bank := e.Gateway
	if bank == "" {
		bank = "the bank"
	}
	switch e.Kind {
	case KindNotSent:
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return Explanation{"connection_refused", bank + " refused the connection; nothing was sent"}
		case isDNS(err):
			return Explanation{"bank_address_unknown", bank + "'s address could not be found (DNS); nothing was sent"}
		case isTimeout(err):
			return Explanation{"connect_timeout", bank + " could not be reached in time; nothing was sent"}
		case isTLS(err):
			return Explanation{"tls_failed", "the secure connection to " + bank + " failed (certificate or TLS); nothing was sent"}
		}
		return Explanation{"not_sent", bank + " could not be reached; nothing was sent"}
	case KindNotProcessed:
		return Explanation{"bank_not_processed", bank + " said it could not process the request now; nothing was done"}
	case KindRateLimited:
		return Explanation{"bank_rate_limited", bank + " asked storepay to slow down (too many requests); nothing was done"}
	case KindUnauthorized:
		return Explanation{"bank_credentials_refused", bank + " refused storepay's credentials: check this bank's API key in the configuration"}
	case KindRejected:
		if e.Code == CodeNotSupported {
			return Explanation{"not_supported", bank + " has no such operation in its protocol"}
		}
		code := MaskPANs(e.Code)
		if code == "" {
			return Explanation{"bank_rejected", bank + " turned the request away; nothing was done"}
		}
		return Explanation{"bank_rejected", bank + " turned the request away (" + code + "); nothing was done"}
	case KindUnavailable:
		switch {
		case errors.Is(err, ErrLookupFailed):
			return Explanation{"lookup_failed", "storepay could not look up what " + bank + " holds for this payment; nothing was sent, and it asks again"}
		case errors.Is(err, ErrGateClosed):
			return Explanation{"forwarding_stopped", bank + " was not called: the emergency stop holds forwarding back"}
		case strings.Contains(e.Err.Error(), "disabled"):
			return Explanation{"bank_disabled", bank + " was not called: it is out of rotation (disabled)"}
		case strings.Contains(e.Err.Error(), "breaker open"), strings.Contains(e.Err.Error(), "probes failing"):
			return Explanation{"bank_out_of_service", bank + " was not called: it failed recently and is out until it answers again"}
		case strings.Contains(e.Err.Error(), "pause"):
			return Explanation{"bank_rate_limited", bank + " was not called: it asked for a pause"}
		case strings.Contains(e.Err.Error(), "not configured"), strings.Contains(e.Err.Error(), "no bank is configured"):
			return Explanation{"bank_not_configured", bank + " is not in the configuration"}
		}
		return Explanation{"bank_unavailable", bank + " was not called; nothing was sent"}
	}
	// KindUnknown: the one that matters most, since the bank may have
	// acted.
	if isTimeout(err) {
		return Explanation{"outcome_unknown", bank + " did not answer in time; it may have the request, so storepay asks the same bank before anything else"}
	}
	if e.Status >= 500 {
		return Explanation{"outcome_unknown", bank + " answered with a server error; it may have the request, so storepay asks the same bank before anything else"}
	}
	return Explanation{"outcome_unknown", "the connection to " + bank + " broke after the request was sent; storepay asks the same bank what it did before anything else"}
}

func isDNS(err error) bool {
	var d *net.DNSError
	return errors.As(err, &d)
}

func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func isTLS(err error) bool {
	return strings.Contains(err.Error(), "tls:") || strings.Contains(err.Error(), "x509:")
}
