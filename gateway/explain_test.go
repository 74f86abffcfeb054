package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Each failure a bank call can end in is told to a manager as a stable
// code and a sentence that names the bank and says whether anything was
// sent; nothing of Go's wording (addresses, ports, "dial tcp") leaks.
func TestExplainTellsAManagerWhatHappened(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}
	raw := fmt.Errorf(`Post "http://127.0.0.1:32967/v1/authorizations": %w`, refused)
	for _, tc := range []struct {
		name     string
		err      error
		code     string
		contains string
	}{
		{"Refused", &Error{Kind: KindNotSent, Gateway: "bank-b", Err: raw}, "connection_refused", "bank-b refused the connection; nothing was sent"},
		{"DNS", &Error{Kind: KindNotSent, Gateway: "bank-b", Err: &net.DNSError{Err: "no such host", Name: "bank.example"}}, "bank_address_unknown", "nothing was sent"},
		{"TimeoutBeforeSend", &Error{Kind: KindNotSent, Gateway: "bank-b", Err: context.DeadlineExceeded}, "connect_timeout", "nothing was sent"},
		{"NotProcessed", &Error{Kind: KindNotProcessed, Gateway: "bank-a", Status: 503, Code: "not_processed"}, "bank_not_processed", "nothing was done"},
		{"RateLimited", &Error{Kind: KindRateLimited, Gateway: "bank-a", Status: 429}, "bank_rate_limited", "slow down"},
		{"Credentials", &Error{Kind: KindUnauthorized, Gateway: "bank-a", Status: 401}, "bank_credentials_refused", "API key"},
		{"Rejected", &Error{Kind: KindRejected, Gateway: "bank-a", Status: 422, Code: "invalid_amount"}, "bank_rejected", "(invalid_amount)"},
		{"RejectedCodeWithCardNumber", &Error{Kind: KindRejected, Gateway: "bank-a", Status: 422, Code: "4242424242424242"}, "bank_rejected", "turned the request away"},
		{"BreakerOpen", &Error{Kind: KindUnavailable, Gateway: "bank-a", Err: errors.New("circuit breaker open")}, "bank_out_of_service", "was not called"},
		{"Disabled", &Error{Kind: KindUnavailable, Gateway: "bank-a", Err: errors.New("disabled after a 401 from the bank: check its API key")}, "bank_disabled", "out of rotation"},
		{"EStop", &Error{Kind: KindUnavailable, Gateway: "bank-a", Err: fmt.Errorf("%w: stop", ErrGateClosed)}, "forwarding_stopped", "emergency stop"},
		{"LookupFailed", &Error{Kind: KindUnavailable, Gateway: "bank-a", Err: fmt.Errorf("%w: bank-a: %w", ErrLookupFailed, raw)}, "lookup_failed", "look up"},
		{"UnknownTimeout", &Error{Kind: KindUnknown, Gateway: "bank-a", Err: context.DeadlineExceeded}, "outcome_unknown", "may have the request"},
		{"UnknownReset", &Error{Kind: KindUnknown, Gateway: "bank-a", Err: syscall.ECONNRESET}, "outcome_unknown", "broke after the request was sent"},
		{"NotABankError", errors.New("sql: database is closed"), "internal_error", "server log"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := Explain(tc.err)
			if x.Code != tc.code || !strings.Contains(x.Text, tc.contains) {
				t.Fatalf("Explain(%v) = %+v; want code %s and text containing %q", tc.err, x, tc.code, tc.contains)
			}
			for _, leak := range []string{"127.0.0.1", "dial", "tcp", "Post", "4242424242424242", "sql:"} {
				if strings.Contains(x.Text, leak) {
					t.Fatalf("the sentence %q leaks %q of the raw error", x.Text, leak)
				}
			}
		})
	}
	if x := Explain(nil); x != (Explanation{}) {
		t.Fatalf("Explain(nil) = %+v; want nothing", x)
	}
}

// switchable is a bank that refuses connections while down.
type switchable struct {
	answerAt
	down atomic.Bool
}

func (s *switchable) Authorize(ctx context.Context, req AuthRequest) (Authorization, error) {
	if s.down.Load() {
		return Authorization{}, &Error{Kind: KindNotSent, URL: "http://127.0.0.1:1",
			Err: &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	}
	return Authorization{ID: "auth_" + req.Key, Status: StatusApproved, Amount: req.Amount}, nil
}

func (s *switchable) Health(context.Context) error {
	if s.down.Load() {
		return &Error{Kind: KindNotSent, Err: syscall.ECONNREFUSED}
	}
	return nil
}

// A bank that went down and came back on an idle store (no payment to
// try it) is shown as taking payments again after its health checks, not
// as half_open forever; its old error and failure count leave the view a
// minute after its recovery; and the view says since when and when it
// last answered.
func TestGatewayViewOnAnIdleStoreAfterRecovery(t *testing.T) {
	ep := &switchable{answerAt: answerAt{url: "a"}}
	pol := Policy{ProbeInterval: time.Hour, AttemptTimeout: 100 * time.Millisecond, MaxAttempts: 1,
		BreakerMinCalls: 2, BreakerDelay: time.Millisecond}
	r, err := NewRouter([]BankSpec{{Name: "bank-b", Endpoints: []Endpoint{ep}, Policy: pol}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var mu sync.Mutex
	clock := time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC)
	r.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
	ctx := context.Background()

	if _, _, err := r.Authorize(ctx, AuthRequest{Key: "k0", Amount: 100, Currency: "USD"}, "", nil); err != nil {
		t.Fatal(err)
	}
	okAt := r.Now()
	advance(time.Second)
	ep.down.Store(true)
	for i := range 3 {
		r.Authorize(ctx, AuthRequest{Key: fmt.Sprint("k", i+1), Amount: 100, Currency: "USD"}, "", nil)
	}
	st := r.Statuses()[0]
	if st.Condition != CondOut || st.LastErrorCode != "connection_refused" ||
		st.LastError != "bank-b refused the connection; nothing was sent" || !st.LastSuccessAt.Equal(okAt) {
		t.Fatalf("a bank refusing connections shows %+v", st)
	}
	if strings.Contains(st.LastError, "127.0.0.1") {
		t.Fatalf("the raw error reached the view: %q", st.LastError)
	}
	outSince := st.Since

	// Back up; nobody pays. The prober's checks alone bring it back.
	advance(10 * time.Second)
	ep.down.Store(false)
	r.banks[0].probe(ctx)
	if st := r.Statuses()[0]; st.State != "half_open" || st.Condition != CondBeingTested {
		t.Fatalf("after a healthy probe the bank shows %s/%s; want half_open/being_tested", st.State, st.Condition)
	}
	r.banks[0].probe(ctx)
	r.banks[0].probe(ctx)
	st = r.Statuses()[0]
	if st.State != "closed" || st.Condition != CondTakingPayments || !st.Since.After(outSince) {
		t.Fatalf("an idle bank answering its health checks shows %+v; want closed and taking payments since its recovery", st)
	}
	if st.LastErrorCode != "connection_refused" {
		t.Fatalf("just after recovery the last error should still be shown: %+v", st)
	}
	advance(ErrorShownFor)
	st = r.Statuses()[0]
	if st.LastError != "" || st.LastErrorCode != "" || st.ConsecutiveFailures != 0 || !st.LastErrorAt.IsZero() {
		t.Fatalf("a minute after recovery the old error is still shown: %+v", st)
	}
	if !st.LastSuccessAt.Equal(okAt) {
		t.Fatalf("last success %v; want %v (no payment since)", st.LastSuccessAt, okAt)
	}
}
