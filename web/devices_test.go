package web_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
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

// The console's devices page lists every device with its health, and its
// forms rename and revoke as the API does, audited as the manager; a form
// without a reason changes nothing.
func TestConsoleDevicesPage(t *testing.T) {
	e := newConsole(t, false)
	ctx := context.Background()
	if _, err := e.reg.Enroll(ctx, "lane-7", devices.RoleTerminal); err != nil {
		t.Fatal(err)
	}
	session := e.login(e.manager)
	page := e.get("/console/devices", session)
	wantStatus(t, page, http.StatusOK)
	for _, want := range []string{`data-device="lane-7" data-health="unknown"`, `id="revoke-lane-7"`, `href="/console/devices" aria-current="page"`} {
		if !strings.Contains(page.body, want) {
			t.Fatalf("devices page lacks %s:\n%.3000s", want, page.body)
		}
	}
	wantStatus(t, e.post(session, "/console/devices", "/console/devices/lane-7/revoke", url.Values{"reason": {""}}), http.StatusBadRequest)
	if d, _ := e.reg.Get(ctx, "lane-7"); d.RevokedAt != nil {
		t.Fatal("a revoke without a reason was carried out")
	}
	wantStatus(t, e.post(session, "/console/devices", "/console/devices/lane-7/rename", url.Values{"reason": {"new till"}, "new_name": {"lane-8"}}), http.StatusSeeOther)
	wantStatus(t, e.post(session, "/console/devices", "/console/devices/lane-8/revoke", url.Values{"reason": {"broken"}}), http.StatusSeeOther)
	d, err := e.reg.Get(ctx, "lane-8")
	if err != nil || d.Health != devices.HealthRevoked {
		t.Fatalf("after the console's rename and revoke: %+v %v", d, err)
	}
	got := e.audit()
	if got[0].Action != "device.revoke" || got[0].Target != "lane-8" || got[1].Action != "device.rename" || got[1].Detail != "renamed from lane-7" {
		t.Fatalf("audit: %+v", got[:2])
	}
	if page := e.get("/console/devices", session); !strings.Contains(page.body, `data-device="lane-8" data-health="revoked"`) {
		t.Fatalf("a revoked device on the page:\n%.3000s", page.body)
	}
}
