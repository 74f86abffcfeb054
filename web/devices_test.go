package web_test

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"storepay/devices"
)

// Revoking a manager's device refuses its token at once, on the API and
// for console sign-in, and ends the console sessions it opened; the
// revocation is audited with who and why.
func TestRevokedTokenIsRefusedEverywhere(t *testing.T) {
	e := newConsole(t, false)
	ctx := context.Background()
	other, err := e.reg.Enroll(ctx, "office-pc", devices.RoleManager)
	if err != nil {
		t.Fatal(err)
	}
	session := e.login(other)
	wantStatus(t, e.get("/console/saf", session), http.StatusOK)
	if a := e.do("GET", "/v1/devices", "", nil, "Authorization", "Bearer "+other); a.status != http.StatusOK {
		t.Fatalf("before revoke: %d %s", a.status, a.body)
	}
	if _, err := e.reg.Revoke(ctx, "office-pc", "boss", "laptop stolen"); err != nil {
		t.Fatal(err)
	}
	if a := e.do("GET", "/v1/devices", "", nil, "Authorization", "Bearer "+other); a.status != http.StatusUnauthorized {
		t.Fatalf("the revoked token on the API: %d %s", a.status, a.body)
	}
	if a := e.get("/console/saf", session); a.status != http.StatusSeeOther {
		t.Fatalf("a console session of the revoked token still works: %d", a.status)
	}
	if a := e.do("POST", "/console/login", "", url.Values{"token": {other}}); a.status != http.StatusUnauthorized || a.cookie("storepay_console") != nil {
		t.Fatalf("console sign-in with the revoked token: %d", a.status)
	}
	got := e.audit()
	// Others are untouched.
	wantStatus(t, e.get("/console/saf", e.login(e.manager)), http.StatusOK)
	if len(got) == 0 || got[0].Action != "device.revoke" || got[0].Target != "office-pc" || got[0].Actor != "boss" || got[0].Reason != "laptop stolen" {
		t.Fatalf("audit: %+v", got)
	}
	// Revoking again is refused and changes nothing; enrolling the name
	// again gives the device a new token that works.
	if _, err := e.reg.Revoke(ctx, "office-pc", "boss", ""); err == nil {
		t.Fatal("a second revoke succeeded")
	}
	fresh, err := e.reg.Enroll(ctx, "office-pc", devices.RoleManager)
	if err != nil {
		t.Fatal(err)
	}
	if a := e.do("GET", "/v1/devices", "", nil, "Authorization", "Bearer "+fresh); a.status != http.StatusOK {
		t.Fatalf("re-enrolled token: %d %s", a.status, a.body)
	}
}
