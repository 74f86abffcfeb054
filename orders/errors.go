package orders

import (
	"errors"
	"fmt"
)

// Kind is the class of a domain error; the web layer maps each kind to one
// HTTP status.
type Kind int

// Error kinds.
const (
	KindInvalid     Kind = iota // 422: the request breaks a business rule
	KindBadRequest              // 400: the request is malformed
	KindNotFound                // 404
	KindConflict                // 409: not allowed in the current state
	KindUnavailable             // 503: a bank or the disk could not do it now
)

// Error is a domain error with a stable snake_case Code and a Message safe
// to show a terminal (never a card number, never an internal detail).
type Error struct {
	Kind    Kind
	Code    string
	Message string
	// Transient errors are not stored for idempotent replay: the same
	// request may succeed later (a payment busy with another operation).
	Transient bool
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

func errf(kind Kind, code, format string, args ...any) *Error {
	return &Error{Kind: kind, Code: code, Message: fmt.Sprintf(format, args...)}
}

// AsError returns the *Error in err's chain, or nil.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

var errInProgress = &Error{Kind: KindConflict, Code: "payment_in_progress",
	Message: "another operation on this payment is still running; retry shortly", Transient: true}
