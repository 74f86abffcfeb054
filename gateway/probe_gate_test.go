package gateway

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
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

var (
	metricsOnce   sync.Once
	metricsReader *sdkmetric.ManualReader
)

// readMetrics installs (once per test binary) a meter provider that a
// test can read, and returns its reader.
func readMetrics() *sdkmetric.ManualReader {
	metricsOnce.Do(func() {
		metricsReader = sdkmetric.NewManualReader()
		otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(metricsReader)))
	})
	return metricsReader
}

// transitions sums storepay.gateway.breaker.transitions for a bank and
// a new state.
func transitions(t *testing.T, reader *sdkmetric.ManualReader, bank, to string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			sum, ok := m.Data.(metricdata.Sum[int64])
			if m.Name != "storepay.gateway.breaker.transitions" || !ok {
				continue
			}
			for _, dp := range sum.DataPoints {
				g, _ := dp.Attributes.Value(attribute.Key("gateway"))
				s, _ := dp.Attributes.Value(attribute.Key("to"))
				if g.AsString() == bank && s.AsString() == to {
					n += dp.Value
				}
			}
		}
	}
	return n
}

// A bank its probes shut shows "open" and counts the transition, like
// one its breaker opened: a dashboard of breaker transitions that missed
// it would show a bank taking no payments as never having failed.
func TestProbeGateCountsAsATransition(t *testing.T) {
	reader := readMetrics()
	ep := &healthless{answerAt{url: "a", auth: func(context.Context, int32) (Authorization, error) {
		return Authorization{ID: "auth_1", Status: StatusApproved}, nil
	}}}
	pol := Policy{ProbeInterval: time.Hour, AttemptTimeout: 100 * time.Millisecond}
	r, err := NewRouter([]BankSpec{{Name: "bank-probed", Endpoints: []Endpoint{ep}, Policy: pol}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	before := transitions(t, reader, "bank-probed", "open")
	r.banks[0].probe(context.Background())
	r.banks[0].probe(context.Background())
	if st := r.Statuses()[0].State; st != "open" {
		t.Fatalf("state %s, want open", st)
	}
	if got := transitions(t, reader, "bank-probed", "open") - before; got != 1 {
		t.Errorf("transitions to open counted %d, want 1", got)
	}
}
