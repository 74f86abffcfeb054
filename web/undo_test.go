package web_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"testing"

	"storepay/web"
)

// Under the default policy a terminal undoes only its own sales: another
// lane's refund, void or cancel is 403 manager_required and changes
// nothing; the lane that took the sale, or a manager, may undo it.
func TestOnlyItsTerminalOrAManagerUndoesASale(t *testing.T) {
	e := newAPIEnv(t, slog.LevelWarn)
	sale, preauth, order := e.fixture(t, "sale"), e.fixture(t, "preauth"), e.fixture(t, "order")
	status := func(id string) string {
		var p struct{ Status string }
		json.Unmarshal(e.do("GET", "/v1/payments/"+id, e.terminal, "", nil).body, &p)
		return p.Status
	}
	for _, tc := range []struct{ name, path, body, payment string }{
		{"Refund", "/v1/payments/" + sale + "/refunds", `{"amount":500}`, sale},
		{"Void", "/v1/payments/" + preauth + "/void", ``, preauth},
		{"Cancel", "/v1/orders/" + order + "/cancel", ``, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := ""
			if tc.payment != "" {
				before = status(tc.payment)
			}
			a := e.do("POST", tc.path, e.lane2, e.key(), []byte(tc.body))
			if code, _ := problemCode(t, a); a.status != http.StatusForbidden || code != "manager_required" {
				t.Fatalf("lane-2 undoing lane-1's sale: %s; want 403 manager_required", a)
			}
			if tc.payment != "" && status(tc.payment) != before {
				t.Fatalf("a refused undo changed the payment: %s -> %s", before, status(tc.payment))
			}
		})
	}
	var o struct{ Status string }
	json.Unmarshal(e.do("GET", "/v1/orders/"+order, e.terminal, "", nil).body, &o)
	if o.Status != "open" {
		t.Fatalf("a refused cancel left the order %s", o.Status)
	}
	if a := e.do("POST", "/v1/payments/"+sale+"/refunds", e.terminal, e.key(), []byte(`{"amount":500}`)); a.status != http.StatusCreated {
		t.Fatalf("lane-1 refunding its own sale: %s", a)
	}
	if a := e.do("POST", "/v1/payments/"+sale+"/refunds", e.manager, e.key(), []byte(`{"amount":500}`)); a.status != http.StatusCreated {
		t.Fatalf("a manager refunding lane-1's sale: %s", a)
	}
	if a := e.do("POST", "/v1/payments/"+preauth+"/void", e.manager, e.key(), nil); a.status != http.StatusOK {
		t.Fatalf("a manager voiding lane-1's pre-authorization: %s", a)
	}
	if a := e.do("POST", "/v1/payments/pay_none/refunds", e.lane2, e.key(), []byte(`{"amount":1}`)); a.status != http.StatusNotFound {
		t.Fatalf("a refund of no payment: %s; want 404", a)
	}
}

// undo_policy any_terminal keeps every lane able to undo every sale.
func TestAnyTerminalPolicyLetsEveryLaneUndo(t *testing.T) {
	e := newAPIEnvUndo(t, slog.LevelWarn, web.UndoAnyTerminal)
	sale := e.fixture(t, "sale")
	if a := e.do("POST", "/v1/payments/"+sale+"/refunds", e.lane2, e.key(), []byte(`{"amount":500}`)); a.status != http.StatusCreated {
		t.Fatalf("lane-2 refunding lane-1's sale under any_terminal: %s", a)
	}
	order := e.fixture(t, "order")
	if a := e.do("POST", "/v1/orders/"+order+"/cancel", e.lane2, e.key(), nil); a.status != http.StatusOK {
		t.Fatalf("lane-2 cancelling lane-1's order under any_terminal: %s", a)
	}
}
