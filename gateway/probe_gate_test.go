package gateway

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// healthless answers payments but fails every health check: a bank whose
// health endpoint is broken (a fake, because the point is a health check
// that disagrees with the bank's own answers, which a simulator that is
// one process cannot be made to do per endpoint).
type healthless struct{ answerAt }

func (h *healthless) Health(context.Context) error { return errors.New("health: HTTP 500") }
func (h *healthless) Capture(_ context.Context, req CaptureRequest) (Authorization, error) {
	return Authorization{ID: req.AuthorizationID, Status: StatusApproved, CapturedAmount: req.Amount}, nil
}

// Failing probes keep new payments away from a bank, but calls tied to it
// (a capture of what it authorized) still go to it, and a manager's
// enable lets new payments back at once.
func TestFailingProbesGateOnlyNewPayments(t *testing.T) {
	ep := &healthless{answerAt{url: "a", auth: func(context.Context, int32) (Authorization, error) {
		return Authorization{ID: "auth_1", Status: StatusApproved}, nil
	}}}
	pol := Policy{ProbeInterval: time.Hour, AttemptTimeout: 100 * time.Millisecond, BreakerDelay: 50 * time.Millisecond}
	r, err := NewRouter([]BankSpec{{Name: "bank-a", Endpoints: []Endpoint{ep}, Policy: pol}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// The probes run here, not on a timer: two failures in a row.
	r.banks[0].probe(context.Background())
	r.banks[0].probe(context.Background())
	deadline := time.Now().Add(10 * time.Second)
	if st := r.Statuses()[0].State; st != "open" {
		t.Fatalf("a bank whose probes fail shows as %s, want open", st)
	}
	if p := r.Preferred(); p != "" {
		t.Fatalf("preferred bank %q while its probes fail; want none", p)
	}
	// The probes opened the breaker too; once its delay is over a capture
	// goes through, though the probes still fail.
	for {
		_, err := r.Capture(context.Background(), "bank-a", CaptureRequest{Key: "c1", AuthorizationID: "auth_1", Amount: 500})
		if err == nil {
			break
		}
		if !strings.Contains(err.Error(), "circuit breaker open") || time.Now().After(deadline) {
			t.Fatalf("a capture at the bank that authorized it: %v", err)
		}
		time.Sleep(5 * time.Millisecond) // polling the breaker's delay
	}
	notified := make(chan string, 16)
	r.OnAvailable(func(bank string) { notified <- bank })
	if err := r.Enable(context.Background(), "bank-a"); err != nil {
		t.Fatal(err)
	}
	if p := r.Preferred(); p != "bank-a" {
		t.Fatalf("after a manager's enable the preferred bank is %q", p)
	}
	select {
	case <-notified: // called in its own goroutine
	case <-time.After(10 * time.Second):
		t.Fatal("enable did not say the bank is available")
	}
}
