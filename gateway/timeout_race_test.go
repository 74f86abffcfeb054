package gateway

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// answerAt is an endpoint whose authorizations answer by a function of
// the call's number. Only here a fake stands in for a bank: the race below
// (an approval read just as the attempt's timer fires) cannot be made to
// happen on demand over a real connection.
type answerAt struct {
	url   string
	calls atomic.Int32
	auth  func(ctx context.Context, n int32) (Authorization, error)
}

func (f *answerAt) URL() string { return f.url }
func (f *answerAt) Authorize(ctx context.Context, req AuthRequest) (Authorization, error) {
	return f.auth(ctx, f.calls.Add(1))
}
func (f *answerAt) Find(context.Context, Lookup) ([]Authorization, error) { return nil, nil }
func (f *answerAt) Capture(context.Context, CaptureRequest) (Authorization, error) {
	return Authorization{}, nil
}
func (f *answerAt) Reverse(context.Context, ReverseRequest) ([]Authorization, error) {
	return nil, nil
}
func (f *answerAt) Refund(context.Context, RefundRequest) (Refund, error) { return Refund{}, nil }
func (f *answerAt) Health(context.Context) error                          { return nil }
func (f *answerAt) Settlement(context.Context, string) ([]byte, error)    { return nil, nil }

// bank-a lets its first attempt run out of time, approves the repeat just
// as the slow attempt's time (which is also the policy's ceiling) runs
// out, then refuses connections. Whether the approval is read or dropped
// by the timer, the outcome at bank-a is approved or unknown: the payment
// must not move to bank-b, which would charge the card a second time.
func TestApprovalLostToTheAttemptTimerNeverFailsOver(t *testing.T) {
	a := &answerAt{url: "a", auth: func(ctx context.Context, n int32) (Authorization, error) {
		switch n {
		case 1:
			<-ctx.Done()
			return Authorization{}, ctx.Err()
		case 2:
			<-ctx.Done() // the answer lands right at the deadline
			return Authorization{ID: "auth_a", Status: StatusApproved}, nil
		}
		return Authorization{}, &Error{Kind: KindNotSent, Err: errors.New("connection refused")}
	}}
	b := &answerAt{url: "b", auth: func(context.Context, int32) (Authorization, error) {
		return Authorization{ID: "auth_b", Status: StatusApproved}, nil
	}}
	pol := Policy{AttemptTimeout: 100 * time.Millisecond, ProbeInterval: -1, BackoffMin: time.Millisecond, BackoffMax: 2 * time.Millisecond}
	r, err := NewRouter([]BankSpec{{Name: "bank-a", Endpoints: []Endpoint{a}, Policy: pol}, {Name: "bank-b", Endpoints: []Endpoint{b}, Policy: pol}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	_, bank, err := r.Authorize(context.Background(), AuthRequest{Key: "pay_1", Reference: "pay_1"}, "", nil)
	if bank == "bank-b" || b.calls.Load() != 0 {
		t.Fatalf("failed over to bank-b after bank-a approved (bank %q, err %v)", bank, err)
	}
	if e := AsError(err); err == nil && bank != "bank-a" || err != nil && (e == nil || e.Kind != KindUnknown) {
		t.Fatalf("want bank-a's approval or an unknown outcome there, got bank %q, err %v", bank, err)
	}
}
