package devices_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"storepay/devices"
	"storepay/migrations"
)

func mustRegistry(t *testing.T) *devices.Registry {
	t.Helper()
	db, err := migrations.Open(context.Background(), filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &devices.Registry{DB: db}
}

func TestEnrollAndAuthenticate(t *testing.T) {
	r := mustRegistry(t)
	ctx := context.Background()
	tok, err := r.Enroll(ctx, "lane-3", devices.RoleTerminal)
	if err != nil {
		t.Fatal(err)
	}
	d, err := r.Authenticate(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if d.Name != "lane-3" || d.Role != devices.RoleTerminal {
		t.Fatalf("got %+v", d)
	}
	if _, err := r.Authenticate(ctx, tok+"x"); !errors.Is(err, devices.ErrUnknownToken) {
		t.Fatalf("wrong token: %v", err)
	}
	var stored string
	r.DB.Read().QueryRow(`SELECT token_hash FROM devices`).Scan(&stored)
	if strings.Contains(stored, tok) || stored == tok {
		t.Fatal("token stored in clear")
	}
}

func TestReenrollRotatesToken(t *testing.T) {
	r := mustRegistry(t)
	ctx := context.Background()
	old, _ := r.Enroll(ctx, "boss", devices.RoleManager)
	fresh, err := r.Enroll(ctx, "boss", devices.RoleManager)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Authenticate(ctx, old); !errors.Is(err, devices.ErrUnknownToken) {
		t.Fatalf("old token still works: %v", err)
	}
	if d, err := r.Authenticate(ctx, fresh); err != nil || d.Role != devices.RoleManager {
		t.Fatalf("new token: %+v %v", d, err)
	}
}

func TestEnrollRejectsBadInput(t *testing.T) {
	r := mustRegistry(t)
	for _, tc := range []struct {
		name string
		role devices.Role
	}{{"", devices.RoleTerminal}, {"has space", devices.RoleTerminal}, {"ok", "admin"}} {
		if _, err := r.Enroll(context.Background(), tc.name, tc.role); err == nil {
			t.Errorf("Enroll(%q, %q) succeeded", tc.name, tc.role)
		}
	}
	if list, _ := r.List(context.Background()); len(list) != 0 {
		t.Fatalf("bad input enrolled %d devices", len(list))
	}
}

// Every enrolment is audited in its own transaction: who, which device,
// from where, and what it did to a device that already had the name (a
// rotated token, a new role, a revoked device let in again). A refused
// enrolment leaves no entry.
func TestEveryEnrolmentIsAudited(t *testing.T) {
	r := mustRegistry(t)
	ctx := context.Background()
	cli := devices.Origin{Actor: "cli", From: "user alice on host till-server, command line"}
	steps := []struct {
		name   string
		role   devices.Role
		detail string
	}{
		{"lane-1", devices.RoleTerminal, "new terminal; from user alice on host till-server, command line"},
		{"lane-1", devices.RoleTerminal, "a new token for the terminal; the old token is refused; from user alice"},
		{"lane-1", devices.RoleManager, "a new token, and the role terminal → manager; the old token is refused; from user alice"},
	}
	for _, st := range steps {
		if _, err := r.EnrollFrom(ctx, st.name, st.role, cli); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Revoke(ctx, "lane-1", "boss", "lost"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.EnrollFrom(ctx, "lane-1", devices.RoleTerminal, devices.Origin{Actor: "demo"}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.EnrollFrom(ctx, "bad name", devices.RoleTerminal, cli); err == nil {
		t.Fatal("a bad name was enrolled")
	}
	got, err := devices.AuditLog(ctx, r.DB, devices.AuditFilter{Action: "device.enroll"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("%d enrolment entries: %+v; want 4", len(got), got)
	}
	for i, st := range steps {
		e := got[len(got)-1-i] // newest first
		if e.Actor != "cli" || e.Target != st.name || !strings.HasPrefix(e.Detail, st.detail) || e.At.IsZero() {
			t.Errorf("enrolment %d: %+v; want actor cli, target %s, detail %q", i+1, e, st.name, st.detail)
		}
	}
	if e := got[0]; e.Actor != "demo" || !strings.HasPrefix(e.Detail, "terminal enrolled again after its revocation (") || strings.Contains(e.Detail, "from") {
		t.Errorf("the enrolment after the revocation: %+v", e)
	}
}
