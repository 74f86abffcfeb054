package slo_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"storepay/migrations"
	"storepay/slo"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// recordedDay builds a storepay database (every migration applied) from a
// recorded day's rows in testdata/slo/NAME/fixture.sql and returns its path.
func recordedDay(t *testing.T, name string) string {
	t.Helper()
	sqlText, err := os.ReadFile(filepath.Join("..", "testdata", "slo", name, "fixture.sql"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "storepay.db")
	db, err := migrations.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Read().Exec(`SELECT 1`); err != nil {
		t.Fatal(err)
	}
	if err := db.Update(context.Background(), func(tx *sql.Tx) error {
		_, err := tx.Exec(string(sqlText))
		return err
	}); err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	return path
}

var window = slo.Options{
	From:  time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC),
	To:    time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC),
	Banks: []string{"acq-a", "acq-b"},
}

func compute(t *testing.T, name string) slo.Report {
	t.Helper()
	db, err := slo.OpenReadOnly(recordedDay(t, name))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rep, err := slo.Compute(context.Background(), db, window)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, name, rep)
	return rep
}

// golden compares the report with testdata/slo/NAME/want.json (written
// with -update, then read and checked by hand).
func golden(t *testing.T, name string, rep slo.Report) {
	t.Helper()
	got, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	file := filepath.Join("..", "testdata", "slo", name, "want.json")
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: report differs from %s:\n%s", name, file, got)
	}
}

func TestGoodDay(t *testing.T) {
	rep := compute(t, "good-day")
	if !rep.Held || !rep.Store.Held || !rep.Payments.Held {
		t.Errorf("good day: objectives not held: %+v", rep)
	}
	p := rep.Payments
	if p.Card != 6 || p.Cash != 2 || p.DecidedInTime != 6 || p.Online != 6 || p.Offline != 0 {
		t.Errorf("payments = %+v, want 6 card (all online, in budget), 2 cash; the one at 20:00 is outside", p)
	}
	if rep.Store.DownSeconds != 0 || rep.OfflineOnlySeconds != 0 || len(rep.Incidents) != 0 {
		t.Errorf("good day: down %v s, offline-only %v s, incidents %v", rep.Store.DownSeconds, rep.OfflineOnlySeconds, rep.Incidents)
	}
	if rep.Budget.Spent != 0 || rep.Budget.Left != 1 || rep.Budget.BurnRate != 0 {
		t.Errorf("budget = %+v", rep.Budget)
	}
}

func TestBadDay(t *testing.T) {
	rep := compute(t, "bad-day")
	if rep.Held || rep.Payments.Held || rep.Store.Held {
		t.Errorf("bad day: held %v (store %v, payments %v), want missed", rep.Held, rep.Store.Held, rep.Payments.Held)
	}
	p := rep.Payments
	// 8 card payments: one late (40 s), one never decided.
	if p.Card != 8 || p.Cash != 1 || p.DecidedInTime != 6 || p.Late != 1 || p.Undecided != 1 || p.Online != 5 || p.Offline != 2 {
		t.Errorf("payments = %+v", p)
	}
	if p.Availability != 0.75 {
		t.Errorf("payment availability = %v, want 0.75", p.Availability)
	}
	// Both banks out 10:10..10:20.
	if rep.OfflineOnlySeconds != 600 {
		t.Errorf("offline-only = %v s, want 600", rep.OfflineOnlySeconds)
	}
	// Crash 12:00..12:02 (120 s) and the undecided payment keeping its
	// customer waiting from 19:01 to the window's end (3540 s).
	if rep.Store.DownSeconds != 3660 {
		t.Errorf("store down = %v s, want 3660", rep.Store.DownSeconds)
	}
	if rep.Budget.Spent != 2 || rep.Budget.BurnRate < 24999 || rep.Budget.BurnRate > 25001 {
		t.Errorf("budget = %+v, want 2 spent, burn rate 25000 (25%% bad over 0.001%% allowed)", rep.Budget)
	}
	type key struct{ kind, bank, state string }
	want := []struct {
		key
		start, end string
		ongoing    bool
		eff        slo.Effect
	}{
		{key{slo.BankOutage, "acq-a", ""}, "10:00:00", "10:30:00", false, slo.Effect{Card: 4, Online: 2, Offline: 2, Bad: 1}},
		{key{slo.BankOutage, "acq-b", ""}, "10:10:00", "10:20:00", false, slo.Effect{Card: 2, Offline: 2}},
		{key{slo.AllBanksOutage, "", ""}, "10:10:00", "10:20:00", false, slo.Effect{Card: 2, Offline: 2}},
		{key{slo.Crash, "", ""}, "12:00:00", "12:02:00", false, slo.Effect{}},
		{key{slo.EStop, "", "pause"}, "13:50:00", "14:00:00", false, slo.Effect{}},
		{key{slo.EStop, "", "stop"}, "14:00:00", "14:15:00", false, slo.Effect{Card: 1, Online: 1}},
		{key{slo.BankOutage, "acq-a", ""}, "19:30:00", "20:00:00", true, slo.Effect{}},
	}
	if len(rep.Incidents) != len(want) {
		t.Fatalf("incidents = %+v, want %d", rep.Incidents, len(want))
	}
	for i, w := range want {
		in := rep.Incidents[i]
		got := key{in.Kind, in.Bank, in.State}
		if got != w.key || in.Start.Format(time.TimeOnly) != w.start || in.End.Format(time.TimeOnly) != w.end ||
			in.Ongoing != w.ongoing || in.Effect != w.eff {
			t.Errorf("incident %d = %+v, want %+v %s..%s ongoing %v %+v", i, in, w.key, w.start, w.end, w.ongoing, w.eff)
		}
	}
}

func TestComputeRefusesEmptyWindow(t *testing.T) {
	db, err := slo.OpenReadOnly(recordedDay(t, "good-day"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := slo.Compute(context.Background(), db, slo.Options{From: window.To, To: window.From}); err == nil {
		t.Error("a window ending before it starts was accepted")
	}
}

func TestOpenReadOnlyWritesNothing(t *testing.T) {
	path := recordedDay(t, "good-day")
	db, err := slo.OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`DELETE FROM payments`); err == nil {
		t.Error("a read-only database took a delete")
	}
}
