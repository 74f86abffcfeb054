package web_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// The SLO page reports the window's payments and refuses a window it
// cannot read.
func TestConsoleSLOPage(t *testing.T) {
	e := newConsole(t, false)
	s := e.login(e.manager)
	e.storedPayment(1250, "4242424242424242") // decided offline, in budget
	a := e.get("/console/slo", s)
	wantStatus(t, a, http.StatusOK)
	for _, want := range []string{`id="slo-verdict" data-held="true"`, "Decided offline", "1 of 1 card payments in budget",
		`aria-current="page">Service level`} {
		if !strings.Contains(a.body, want) {
			t.Errorf("SLO page lacks %q:\n%s", want, a.body)
		}
	}
	// A window before the payment: no card payment, nothing missed.
	q := url.Values{"from": {time.Now().Add(-48 * time.Hour).UTC().Format(time.RFC3339)}, "to": {time.Now().Add(-24 * time.Hour).UTC().Format(time.RFC3339)}}
	if a := e.get("/console/slo?"+q.Encode(), s); a.status != http.StatusOK || !strings.Contains(a.body, "0 of 0 card payments") {
		t.Errorf("an earlier window: %d %s", a.status, a.body)
	}
	wantStatus(t, e.get("/console/slo?from=yesterday", s), http.StatusUnprocessableEntity)
	q = url.Values{"from": {"2026-12-02T00:00:00Z"}, "to": {"2026-12-01T00:00:00Z"}}
	wantStatus(t, e.get("/console/slo?"+q.Encode(), s), http.StatusUnprocessableEntity)
}
