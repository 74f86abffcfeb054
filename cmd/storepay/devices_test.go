package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"storepay/migrations"
)

func findDevice(t *testing.T, s *store, name string) map[string]any {
	t.Helper()
	list := must(t, s.mgr("GET", "/v1/devices", nil), 200)
	for _, d := range list.body["data"].([]any) {
		if m := d.(map[string]any); m["name"] == name {
			return m
		}
	}
	t.Fatalf("device %s not listed: %s", name, list)
	return nil
}

// Devices for real, end to end: last seen (time, address) per device; a
// terminal's heartbeat with its peripherals makes it degraded when one
// reports an error and offline when it falls silent for two intervals,
// on GET /v1/devices, in readiness detail and in /metrics; bad heartbeats
// change nothing; rename changes the terminal_id of the next payments and
// is audited; the CLI lists and revokes, and a revoked token is refused
// at once.
func TestDevicesLastSeenHeartbeatRenameRevoke(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b})
	before := time.Now().Add(-time.Second)
	s.order(500) // the terminal is seen
	d := findDevice(t, s, "lane-3")
	if d["last_seen_address"] != "127.0.0.1" || d["health"] != "unknown" || d["role"] != "terminal" {
		t.Fatalf("lane-3 after a request: %v", d)
	}
	if seen, err := time.Parse(time.RFC3339Nano, d["last_seen_at"].(string)); err != nil || seen.Before(before) {
		t.Fatalf("last_seen_at %v: %v", d["last_seen_at"], err)
	}
	if _, ok := d["token"]; ok {
		t.Fatal("a device's token is listed")
	}

	// Bad heartbeats: a clear 400 each, nothing recorded.
	for _, body := range []any{
		map[string]any{},
		map[string]any{"interval_seconds": 4},
		map[string]any{"interval_seconds": 3601},
		map[string]any{"interval_seconds": 10, "peripherals": []any{map[string]any{"kind": "scanner", "status": "ok"}}},
		map[string]any{"interval_seconds": 10, "peripherals": []any{map[string]any{"kind": "printer", "status": "ok"}, map[string]any{"kind": "printer", "status": "ok"}}},
		map[string]any{"interval_seconds": 10, "peripherals": []any{map[string]any{"kind": "printer", "status": "smoking"}}},
		map[string]any{"interval_seconds": 10, "peripherals": []any{map[string]any{"kind": "printer", "status": "error", "detail": strings.Repeat("x", 201)}}},
	} {
		wantProblem(t, s.call("POST", "/v1/devices/heartbeat", s.terminal, "", body), 400, "invalid_request")
	}
	if d := findDevice(t, s, "lane-3"); d["heartbeat_at"] != nil || len(d["peripherals"].([]any)) != 0 {
		t.Fatalf("a refused heartbeat was recorded: %v", d)
	}

	hb := must(t, s.call("POST", "/v1/devices/heartbeat", s.terminal, "", map[string]any{"interval_seconds": 5, "peripherals": []any{
		map[string]any{"kind": "pin_pad", "status": "ok"},
		map[string]any{"kind": "printer", "status": "error", "detail": "paper out, card 4242424242424242 jammed"},
		map[string]any{"kind": "cash_drawer", "status": "ok"},
	}}), 200)
	if hb.str("health") != "degraded" || strings.Contains(string(hb.raw), visa) {
		t.Fatalf("heartbeat with a printer error: %s", hb)
	}
	ready := must(t, s.call("GET", "/readyz", "", "", nil), 200)
	if !strings.Contains(string(ready.raw), `"lane-3 degraded"`) {
		t.Fatalf("readiness detail: %s", ready)
	}
	metric := func(health string) string {
		return `storepay_devices\{[^}]*health="` + health + `"[^}]*\} `
	}
	m := s.call("GET", "/metrics", "", "", nil)
	if !regexp.MustCompile(metric("degraded") + `1\b`).Match(m.raw) {
		t.Fatalf("/metrics has no degraded device:\n%s", grepLines(m.raw, "storepay_devices"))
	}

	// Silent for two intervals: offline.
	s.exec(`UPDATE devices SET heartbeat_at = '` + migrations.FormatTime(time.Now().Add(-11*time.Second)) + `' WHERE name = 'lane-3'`)
	if d := findDevice(t, s, "lane-3"); d["health"] != "offline" {
		t.Fatalf("silent for 11 s at a 5 s interval: %v", d["health"])
	}
	if ready := s.call("GET", "/readyz", "", "", nil); ready.status != 200 || !strings.Contains(string(ready.raw), `"lane-3 offline"`) {
		t.Fatalf("an offline terminal must show in readiness detail without making storepay unready: %s", ready)
	}
	if m := s.call("GET", "/metrics", "", "", nil); !regexp.MustCompile(metric("offline") + `1\b`).Match(m.raw) {
		t.Fatalf("/metrics has no offline device:\n%s", grepLines(m.raw, "storepay_devices"))
	}

	// Rename: refused onto a taken name, then done and audited.
	wantProblem(t, s.mgr("POST", "/v1/devices/lane-3/rename", map[string]any{"name": "boss"}), 409, "device_name_taken")
	wantProblem(t, s.mgr("POST", "/v1/devices/lane-3/rename", map[string]any{"name": "bad name!"}), 400, "invalid_request")
	wantProblem(t, s.mgr("POST", "/v1/devices/nobody/rename", map[string]any{"name": "x"}), 404, "device_not_found")
	wantProblem(t, s.call("GET", "/v1/devices", s.terminal, "", nil), 403, "forbidden")
	r := must(t, s.mgr("POST", "/v1/devices/lane-3/rename", map[string]any{"name": "lane-9", "reason": "moved to the garden centre"}), 200)
	if r.str("name") != "lane-9" {
		t.Fatalf("rename: %s", r)
	}
	o := must(t, s.get("/v1/orders/"+s.order(300)), 200)
	if o.str("terminal_id") != "lane-9" {
		t.Fatalf("an order after the rename: terminal_id %q", o.str("terminal_id"))
	}
	audit := must(t, s.mgr("GET", "/v1/audit?action=device.rename", nil), 200)
	if !strings.Contains(string(audit.raw), "renamed from lane-3") || !strings.Contains(string(audit.raw), `"actor":"boss"`) {
		t.Fatalf("rename audit: %s", audit)
	}

	// The CLI lists and revokes beside the serving store.
	path := s.writeConfig()
	var out, errb bytes.Buffer
	if c := exitCode(run(context.Background(), []string{"devices", "list", "--config", path}, nil, &out, &errb), &errb); c != 0 {
		t.Fatalf("devices list: exit %d: %s", c, errb.String())
	}
	if !regexp.MustCompile(`(?m)^lane-9 +terminal +offline +\S+ +127\.0\.0\.1 +cash_drawer=ok pin_pad=ok printer=error$`).MatchString(out.String()) {
		t.Fatalf("devices list:\n%s", out.String())
	}
	errb.Reset()
	if c := exitCode(run(context.Background(), []string{"devices", "revoke", "--config", path, "--name", "nobody"}, nil, &out, &errb), &errb); c != 1 {
		t.Fatalf("revoke of an unknown device: exit %d", c)
	}
	out.Reset()
	if c := exitCode(run(context.Background(), []string{"devices", "revoke", "--config", path, "--name", "lane-9", "--reason", "lost"}, nil, &out, &errb), &errb); c != 0 {
		t.Fatalf("devices revoke: exit %d: %s", c, errb.String())
	}
	wantProblem(t, s.call("GET", "/v1/orders/x", s.terminal, "", nil), 401, "unauthorized")
	if d := findDevice(t, s, "lane-9"); d["health"] != "revoked" || d["revoked_at"] == nil {
		t.Fatalf("after revoke: %v", d)
	}
	audit = must(t, s.mgr("GET", "/v1/audit?action=device.revoke", nil), 200)
	if !strings.Contains(string(audit.raw), `"actor":"cli"`) || !strings.Contains(string(audit.raw), `"reason":"lost"`) {
		t.Fatalf("revoke audit: %s", audit)
	}
	wantProblem(t, s.mgr("POST", "/v1/devices/lane-9/revoke", nil), 409, "device_revoked")

	// Enrolling from the command line is audited: the actor cli, the
	// device, and from where (the user and the host).
	out.Reset()
	if c := exitCode(run(context.Background(), []string{"devices", "enroll", "--config", path, "--name", "lane-9", "--role", "terminal"}, nil, &out, &errb), &errb); c != 0 {
		t.Fatalf("devices enroll: exit %d: %s", c, errb.String())
	}
	audit = must(t, s.mgr("GET", "/v1/audit?action=device.enroll&target=lane-9", nil), 200)
	host, _ := os.Hostname()
	var entries struct {
		Data []struct{ Actor, Target, Detail string }
	}
	if err := json.Unmarshal(audit.raw, &entries); err != nil || len(entries.Data) != 1 {
		t.Fatalf("enrol audit: %s (%v)", audit, err)
	}
	if e := entries.Data[0]; e.Actor != "cli" || !strings.HasPrefix(e.Detail, "terminal enrolled again after its revocation") ||
		!strings.Contains(e.Detail, "; from user ") || !strings.Contains(e.Detail, " on host "+host+", command line") {
		t.Fatalf("enrol audit entry: %+v", e)
	}
}

func grepLines(b []byte, sub string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// devices revoke's --reason is held to the manager API's rules: at most
// 500 characters (refused, nothing changed) and a card number in it
// masked before it reaches the audit log.
func TestDevicesRevokeReasonIsBoundedAndMasked(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	path := s.writeConfig()
	revoke := func(reason string) (int, string) {
		var out, errb bytes.Buffer
		c := exitCode(run(context.Background(), []string{"devices", "revoke", "--config", path, "--name", "lane-3", "--reason", reason}, nil, &out, &errb), &errb)
		return c, errb.String()
	}
	if c, stderr := revoke(strings.Repeat("r", 501)); c != 1 || !strings.Contains(stderr, "--reason is 501 characters, at most 500") {
		t.Fatalf("revoke with a reason of 501 characters: exit %d: %s", c, stderr)
	}
	if d := findDevice(t, s, "lane-3"); d["health"] == "revoked" {
		t.Fatal("a refused revoke revoked the device")
	}
	if c, stderr := revoke("customer left card " + visa + " on the till"); c != 0 {
		t.Fatalf("revoke: exit %d: %s", c, stderr)
	}
	audit := must(t, s.mgr("GET", "/v1/audit?action=device.revoke", nil), 200)
	if strings.Contains(string(audit.raw), visa) || !strings.Contains(string(audit.raw), `"reason":"customer left card 424242******4242 on the till"`) {
		t.Fatalf("revoke audit: %s", audit)
	}
}
