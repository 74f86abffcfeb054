package gateway

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// ctxMark marks a context as a request's, as web's request id does.
type ctxMark struct{}

// ctxRecorder keeps each log record's message and whether it was logged
// with the marked context.
type ctxRecorder struct {
	mu   sync.Mutex
	msgs map[string]bool
}

func (h *ctxRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (h *ctxRecorder) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *ctxRecorder) WithGroup(string) slog.Handler            { return h }
func (h *ctxRecorder) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.msgs[r.Message] = ctx.Value(ctxMark{}) != nil
	return nil
}

// The lines a payment's bank calls log while serving a request (a failed
// call, a failover, a bank's credentials refused, a manager's enable and
// disable) are logged with the request's context, so that storepay's
// logger adds the request's id to them (web.RequestIDHandler).
func TestLinesAboutARequestAreLoggedWithItsContext(t *testing.T) {
	refused := &answerAt{url: "a", auth: func(context.Context, int32) (Authorization, error) {
		return Authorization{}, &Error{Kind: KindNotSent, Err: errors.New("connection refused")}
	}}
	unauthorized := &answerAt{url: "b", auth: func(context.Context, int32) (Authorization, error) {
		return Authorization{}, &Error{Kind: KindUnauthorized, Err: errors.New("HTTP 401")}
	}}
	approves := &answerAt{url: "c", auth: func(context.Context, int32) (Authorization, error) {
		return Authorization{ID: "auth_c", Status: StatusApproved}, nil
	}}
	pol := Policy{ProbeInterval: -1, AttemptTimeout: time.Second, MaxAttempts: 1}
	rec := &ctxRecorder{msgs: map[string]bool{}}
	r, err := NewRouter([]BankSpec{{Name: "bank-a", Endpoints: []Endpoint{refused}, Policy: pol},
		{Name: "bank-b", Endpoints: []Endpoint{unauthorized}, Policy: pol},
		{Name: "bank-c", Endpoints: []Endpoint{approves}, Policy: pol}}, slog.New(rec))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.WithValue(context.Background(), ctxMark{}, true)
	if _, bank, err := r.Authorize(ctx, AuthRequest{Key: "k1", Reference: "pay_1", Amount: 500, Currency: "USD"}, "", nil); err != nil || bank != "bank-c" {
		t.Fatalf("authorize: %s, %v; want bank-c", bank, err)
	}
	if err := r.Disable(ctx, "bank-c"); err != nil {
		t.Fatal(err)
	}
	if err := r.Enable(ctx, "bank-c"); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, msg := range []string{"bank call failed", "bank did nothing, failing over", "bank disabled by a manager", "bank enabled"} {
		withCtx, logged := rec.msgs[msg]
		if !logged || !withCtx {
			t.Errorf("%q: logged %v, with the request's context %v; want both", msg, logged, withCtx)
		}
	}
	alert := false
	for msg, withCtx := range rec.msgs {
		alert = alert || strings.HasPrefix(msg, "ALERT: bank rejected storepay's credentials")
		if !withCtx {
			t.Errorf("%q was logged without the request's context", msg)
		}
	}
	if !alert {
		t.Errorf("no alert for bank-b's refused credentials: %v", rec.msgs)
	}
}
