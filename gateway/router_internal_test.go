package gateway

import (
	"errors"
	"net/http"
	"testing"
)

// The breaker counts what says a bank is sick, not what says it is busy
// with a key or working as it should.
func TestBankFailure(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"Answered", nil, false},
		{"Unknown", &Error{Kind: KindUnknown, Status: 500}, true},
		{"NotSent", &Error{Kind: KindNotSent}, true},
		{"NotProcessed", &Error{Kind: KindNotProcessed, Status: 503}, true},
		{"Rejected", &Error{Kind: KindRejected, Status: 422}, false},
		{"KeyInUse", &Error{Kind: KindUnknown, Status: http.StatusConflict, Code: "idempotency_key_in_use"}, false},
		{"Unclassified", errors.New("boom"), true},
	} {
		if got := bankFailure(tc.err); got != tc.want {
			t.Errorf("%s: bankFailure = %v, want %v", tc.name, got, tc.want)
		}
	}
}
