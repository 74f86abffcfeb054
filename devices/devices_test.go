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
