package web_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"storepay/devices"
)

// A path or query past its limit is refused with 414 before anything
// reads it: not routed, not kept under an Idempotency-Key, and logged
// only in part. One at the limit is served as usual.
func TestLongPathsAndQueriesAreRefused(t *testing.T) {
	e := newAPIEnv(t, slog.LevelInfo)
	order := e.fixture(t, "order")
	long := strings.Repeat("x", 3000)
	e.logs.take()
	for _, tc := range []struct{ method, path string }{
		{"GET", "/v1/orders/ord_" + long},
		{"POST", "/v1/orders/ord_" + long + "/payments"},
		{"GET", "/v1/payments?terminal_id=" + long},
		{"GET", "/console/payments?q=" + long},
	} {
		a := e.do(tc.method, tc.path, e.terminal, "long-1", []byte(`{"method":"cash","amount":100}`))
		var p struct {
			Code      string
			RequestID string `json:"request_id"`
		}
		if a.status != http.StatusRequestURITooLong || json.Unmarshal(a.body, &p) != nil || p.Code != "uri_too_long" ||
			a.header.Get("Content-Type") != "application/problem+json" || p.RequestID == "" || p.RequestID != a.header.Get("X-Request-Id") {
			t.Errorf("%s %.40s...: %.300s; want 414 uri_too_long with its request id", tc.method, tc.path, a)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(e.logs.take()), "\n") {
		if len(line) > 1000 {
			t.Errorf("a log line of %d bytes: %.300s...", len(line), line)
		}
	}
	// The refused keyed request kept nothing under its key.
	if a := e.do("POST", "/v1/orders/"+order+"/payments", e.terminal, "long-1", []byte(`{"method":"cash","amount":100}`)); a.status != http.StatusCreated {
		t.Fatalf("the key of a refused request, on a real payment: %s; want 201", a)
	}
	// At the limit: routed, and answered by the route (no such order).
	atLimit := "/v1/orders/" + strings.Repeat("y", 2048-len("/v1/orders/"))
	if a := e.do("GET", atLimit, e.terminal, "", nil); a.status != http.StatusNotFound {
		t.Fatalf("a path of 2048 bytes: %.200s; want 404", a)
	}
}

// A manager's reason is limited to 500 characters wherever it is given,
// counted as characters: 300 accented letters are a short reason, on a
// revoke as on a rename; 501 characters are refused, naming the field,
// and change nothing.
func TestManagerReasonsAreLimitedInCharacters(t *testing.T) {
	e := newAPIEnv(t, slog.LevelWarn)
	accented := strings.Repeat("é", 300) // 600 bytes
	body := func(v map[string]any) []byte { b, _ := json.Marshal(v); return b }
	if a := e.do("POST", "/v1/devices/lane-1/rename", e.manager, "", body(map[string]any{"name": "lane-7", "reason": strings.Repeat("r", 400)})); a.status != http.StatusOK {
		t.Fatalf("rename with a reason of 400 characters: %s", a)
	}
	if a := e.do("POST", "/v1/devices/lane-7/rename", e.manager, "", body(map[string]any{"name": "lane-8", "reason": strings.Repeat("r", 501)})); a.status != http.StatusBadRequest ||
		!strings.Contains(string(a.body), "reason is too long: at most 500 characters") {
		t.Fatalf("rename with a reason of 501 characters: %s; want 400 naming reason", a)
	}
	if a := e.do("POST", "/v1/devices/lane-2/revoke", e.manager, "", body(map[string]any{"reason": accented})); a.status != http.StatusOK {
		t.Fatalf("revoke with 300 accented letters: %s", a)
	}
	db := e.db
	got, err := devices.AuditLog(context.Background(), db, devices.AuditFilter{Action: "device.revoke"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Reason != accented {
		t.Fatalf("revoke's audit entry: %+v", got)
	}
	all, err := devices.AuditLog(context.Background(), db, devices.AuditFilter{Action: "device.rename"})
	if err != nil || len(all) != 1 {
		t.Fatalf("renames audited: %+v (%v); want the one accepted", all, err)
	}
}
