package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"storepay/migrations"
	"storepay/slo"
)

// storepay slo on the recorded days: exit 0 when held, 1 when missed, 2
// when it cannot run; text and JSON; the database is not written.
func TestSLOCommand(t *testing.T) {
	day := func(name string) string {
		db := filepath.Join(t.TempDir(), "sp.db")
		fixture, err := os.ReadFile(filepath.Join("..", "..", "testdata", "slo", name, "fixture.sql"))
		if err != nil {
			t.Fatal(err)
		}
		d, err := migrations.Open(context.Background(), db)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Update(context.Background(), func(tx *sql.Tx) error {
			_, err := tx.Exec(string(fixture))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		// The recorded days' banks are acq-a and acq-b: name them in the
		// config, or the report would see two more banks, never out, and
		// no all-banks outage.
		cfg := writeConfig(t, db)
		text, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		text = []byte(strings.NewReplacer(`"bank-a"`, `"acq-a"`, `"bank-b"`, `"acq-b"`).Replace(string(text)))
		if err := os.WriteFile(cfg, text, 0o600); err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	var out, errb bytes.Buffer
	code := func(args ...string) int {
		out.Reset()
		errb.Reset()
		return exitCode(run(context.Background(), args, func(string) string { return "" }, &out, &errb), &errb)
	}
	good, bad := day("good-day"), day("bad-day")
	window := []string{"--from", "2026-12-01T08:00:00Z", "--to", "2026-12-01T20:00:00Z"}

	if c := code(append([]string{"slo", "--config", good}, window...)...); c != 0 {
		t.Fatalf("good day: exit %d, want 0: %s%s", c, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "all objectives held") || !strings.Contains(out.String(), "payment availability  100.0000%") {
		t.Errorf("good day text:\n%s", out.String())
	}
	if c := code(append([]string{"slo", "--json", "--config", bad}, window...)...); c != 1 {
		t.Fatalf("bad day: exit %d, want 1: %s", c, errb.String())
	}
	var rep slo.Report
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("bad day JSON: %v\n%s", err, out.String())
	}
	if rep.Held || rep.Payments.Availability != 0.75 || len(rep.Incidents) != 7 {
		t.Errorf("bad day JSON: held %v, availability %v, %d incidents", rep.Held, rep.Payments.Availability, len(rep.Incidents))
	}
	for _, tc := range [][]string{
		{"slo", "--config", good, "--from", "2026-12-01"},                                                                        // no --to
		{"slo", "--config", good, "--from", "yesterday", "--to", "2026-12-02"},                                                   // bad time
		{"slo", "--config", good, "--from", "2026-12-02", "--to", "2026-12-01"},                                                  // empty window
		{"slo", "--from", "2026-12-01", "--to", "2026-12-02"},                                                                    // no config
		{"slo", "--config", writeConfig(t, filepath.Join(t.TempDir(), "none.db")), "--from", "2026-12-01", "--to", "2026-12-02"}, // no database
		{"slo", "--config", good, "--bogus"},
	} {
		if c := code(tc...); c != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", tc, c, errb.String())
		}
	}
}

// A serving store exposes the SLO gauges: one card payment decided in
// time makes the 5-minute window's availability 1 with one card payment.
func TestSLOGauges(t *testing.T) {
	s := startStore(t, []*bank{startBank(t, "bank-a", 1)})
	must(t, s.post("/v1/orders/"+s.order(500)+"/payments", cardBody(500, visa, nil)), 201)
	r := s.call("GET", "/metrics", "", "", nil)
	if r.status != 200 {
		t.Fatalf("metrics: %d", r.status)
	}
	text := string(r.raw)
	for _, want := range []string{
		`storepay_slo_card_payments{otel_scope_name="storepay/slo",otel_scope_schema_url="",otel_scope_version="",window="5m"} 1`,
		`storepay_slo_payment_availability{otel_scope_name="storepay/slo",otel_scope_schema_url="",otel_scope_version="",window="1d"} 1`,
		`storepay_slo_burn_rate{otel_scope_name="storepay/slo",otel_scope_schema_url="",otel_scope_version="",window="1h"} 0`,
	} {
		if !strings.Contains(text, want) {
			var slo []string
			for _, l := range strings.Split(text, "\n") {
				if strings.HasPrefix(l, "storepay_slo_") {
					slo = append(slo, l)
				}
			}
			t.Errorf("metrics lack %s; the slo lines:\n%s", want, strings.Join(slo, "\n"))
		}
	}
}

// storepay gameday refuses what it cannot run with exit 2, before
// starting anything.
func TestGamedayCommandRefuses(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "plan.json")
	if err := os.WriteFile(bad, []byte(`{"name":"x","open":"08:00","close":"20:00","speed":720,"customers_per_hour":10,"mix":{},"max_payments":10,"incidents":[{"at":"10:00","for":"5m","kind":"meteor"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"gameday"},
		{"gameday", "--plan", filepath.Join(t.TempDir(), "missing.json")},
		{"gameday", "--plan", bad},
		{"gameday", "--plan", bad, "extra"},
	} {
		var out, errb bytes.Buffer
		if c := exitCode(run(context.Background(), args, func(string) string { return "" }, &out, &errb), &errb); c != 2 {
			t.Errorf("%q: exit %d, want 2 (%s)", args, c, errb.String())
		}
	}
}

// A window that ends tomorrow is reported up to now: the report's end is
// not in the future.
func TestSLOWindowEndingInTheFutureEndsNow(t *testing.T) {
	db := filepath.Join(t.TempDir(), "sp.db")
	d, err := migrations.Open(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := writeConfig(t, db)
	var out, errb bytes.Buffer
	tomorrow := time.Now().UTC().Add(24 * time.Hour).Format("2006-01-02")
	err = run(context.Background(), []string{"slo", "--config", cfg, "--from", "2020-01-01", "--to", tomorrow, "--json"},
		func(string) string { return "" }, &out, &errb)
	if code := exitCode(err, &errb); code == 2 {
		t.Fatalf("slo: exit 2\n%s", errb.String())
	}
	var rep struct{ To time.Time }
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("slo --json: %v\n%s", err, out.String())
	}
	if rep.To.IsZero() || rep.To.After(time.Now()) {
		t.Errorf("the report's window ends %s: want now, not in the future", rep.To)
	}
}
