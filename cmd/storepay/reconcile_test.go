package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"storepay/reconcile"
)

// writeConfig writes the store's config where storepay reconcile can read
// it, as cron would.
func (s *store) writeConfig() string {
	s.t.Helper()
	b, err := json.MarshalIndent(s.cfg, "", "  ")
	if err != nil {
		s.t.Fatal(err)
	}
	path := filepath.Join(s.t.TempDir(), "storepay.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		s.t.Fatal(err)
	}
	return path
}

// reconcileCmd runs storepay reconcile and returns its exit code and
// stdout.
func (s *store) reconcileCmd(args ...string) (int, string, error) {
	s.t.Helper()
	var stdout, stderr bytes.Buffer
	err := runReconcile(context.Background(), args, func(k string) string { return s.env[k] }, &stdout, &stderr)
	code := exitCode(err, &stderr)
	if testing.Verbose() {
		s.t.Logf("storepay reconcile %s → %d\n%s%s", strings.Join(args, " "), code, stdout.String(), stderr.String())
	}
	return code, stdout.String(), err
}

// today runs during, which makes payments, and returns their business
// date (UTC). A test reconciles one day, so it starts clear of midnight.
func today(t *testing.T, during func()) string {
	clearOfMidnight(t, 2*time.Minute)
	day := time.Now().UTC().Format(time.DateOnly)
	during()
	if now := time.Now().UTC().Format(time.DateOnly); now != day {
		t.Fatalf("the payments took longer than 2 minutes: they straddle %s and %s", day, now)
	}
	return day
}

// A business day at two banks, reconciled from the banks' own reports:
// captures and refunds match, a double charge injected at one bank is
// found, a sale declined after forward and a sale still queued offline
// are listed, and re-running the night changes nothing.
func TestReconcileABusinessDay(t *testing.T) {
	a, b := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	s := startStore(t, []*bank{a, b})
	const declining = "4000000000000002"
	pay := func(amount int64, pan string, extra map[string]any) resp {
		return must(t, s.post("/v1/orders/"+s.order(amount)+"/payments", cardBody(amount, pan, extra)), 201)
	}
	var p1, p2, p3, declined, queued resp
	day := today(t, func() {
		p1 = pay(1450, visa, nil)
		p2 = pay(2380, visa, nil)
		must(t, s.post("/v1/payments/"+p2.str("id")+"/refunds", map[string]any{"amount": 500}), 201)

		// bank-a is taken out of rotation: the next sale goes to bank-b.
		must(t, s.mgr("POST", "/v1/gateways/bank-a/disable", nil), 200)
		p3 = pay(5200, "5555555555554444", nil)
		must(t, s.mgr("POST", "/v1/gateways/bank-a/enable", nil), 200)

		// Sold offline to a card the bank will decline once forwarded.
		must(t, s.mgr("PUT", "/v1/estop", map[string]any{"state": "pause", "reason": "test"}), 200)
		declined = pay(800, declining, map[string]any{"offline_behavior": "force_offline"})
		must(t, s.mgr("PUT", "/v1/estop", map[string]any{"state": "go", "reason": "test"}), 200)
		s.waitPayment(declined.str("id"), "declined_after_forward")

		// Sold offline and still queued at night: forwarding is paused.
		must(t, s.mgr("PUT", "/v1/estop", map[string]any{"state": "pause", "reason": "night"}), 200)
		queued = pay(650, visa, map[string]any{"offline_behavior": "force_offline"})
	})
	if p1.str("gateway") != "bank-a" || p2.str("gateway") != "bank-a" || p3.str("gateway") != "bank-b" {
		t.Fatalf("payments went to %s, %s, %s; want bank-a, bank-a, bank-b", p1.str("gateway"), p2.str("gateway"), p3.str("gateway"))
	}

	// bank-b charged the card of p3 a second time under another id.
	if err := b.sim.AddSettlementRows(day, []byte(fmt.Sprintf("%s-01,store-042,auth_DUPLICATE0001,%s,Settled,%sT23:10:00Z,USD,5200,-181,5019,4444,ZZ9Z9Z\n",
		strings.ReplaceAll(day, "-", ""), p3.str("id"), day))); err != nil {
		t.Fatal(err)
	}
	cfgPath := s.writeConfig()
	for _, bk := range []*bank{a, b} {
		if err := bk.sim.CloseDay(day); err != nil {
			t.Fatal(err)
		}
	}

	code, out, err := s.reconcileCmd("--config", cfgPath, "--date", day)
	if code != 1 {
		t.Fatalf("exit code %d (%v), want 1: discrepancies need a person\n%s", code, err, out)
	}
	rep, err := reconcile.Last(context.Background(), s.app.DB, day)
	if err != nil {
		t.Fatal(err)
	}
	type key struct {
		category reconcile.Category
		gateway  string
		payment  string
		kind     string
	}
	got := map[key][]reconcile.Item{}
	for _, it := range rep.Items {
		k := key{it.Category, it.Gateway, it.PaymentID, it.Kind}
		got[k] = append(got[k], it)
	}
	want := []struct {
		key          key
		store, bank  int64
		psp, refund  string
		wantResolved reconcile.Action
	}{
		{key: key{reconcile.Matched, "bank-a", p1.str("id"), "capture"}, store: 1450, bank: 1450},
		{key: key{reconcile.Matched, "bank-a", p2.str("id"), "capture"}, store: 2380, bank: 2380},
		{key: key{reconcile.Matched, "bank-a", p2.str("id"), "refund"}, store: -500, bank: -500},
		{key: key{reconcile.Matched, "bank-b", p3.str("id"), "capture"}, store: 5200, bank: 5200},
		{key: key{reconcile.DuplicateAtBank, "bank-b", p3.str("id"), "capture"}, store: 5200, bank: 5200,
			psp: "auth_DUPLICATE0001", wantResolved: reconcile.ReverseDuplicateCharge},
		{key: key{reconcile.DeclinedAfterForward, "bank-a", declined.str("id"), "sale"}, store: 800, bank: 0, wantResolved: reconcile.WriteOff},
		{key: key{reconcile.NotForwarded, "", queued.str("id"), "sale"}, store: 650, bank: 0, wantResolved: reconcile.ForwardStored},
	}
	for _, w := range want {
		items := got[w.key]
		if len(items) != 1 {
			t.Errorf("%+v: %d items, want 1", w.key, len(items))
			continue
		}
		it := items[0]
		if it.StoreAmount != w.store || it.BankAmount != w.bank {
			t.Errorf("%+v: store %d bank %d, want %d and %d", w.key, it.StoreAmount, it.BankAmount, w.store, w.bank)
		}
		if w.psp != "" && it.PSPReference != w.psp {
			t.Errorf("%+v: psp_reference %s, want the injected %s", w.key, it.PSPReference, w.psp)
		}
		if w.wantResolved != "" && (it.Resolution == nil || it.Resolution.Action != w.wantResolved) {
			t.Errorf("%+v: resolution %+v, want %s", w.key, it.Resolution, w.wantResolved)
		}
		delete(got, w.key)
	}
	for k, items := range got {
		t.Errorf("unexpected %+v: %+v", k, items)
	}
	if rep.Status != reconcile.Discrepancies || rep.Summary.Discrepancies != 3 {
		t.Errorf("status %s with %d discrepancies, want 3", rep.Status, rep.Summary.Discrepancies)
	}
	totals := map[string]reconcile.CurrencyTotals{}
	for _, bt := range rep.Summary.Banks {
		if len(bt.Currencies) == 1 {
			totals[bt.Gateway] = bt.Currencies[0]
		}
	}
	if totals["bank-a"].Gross != 1450+2380-500 || totals["bank-b"].Gross != 2*5200 {
		t.Errorf("bank totals %+v: want bank-a gross 3330, bank-b 10400 (the double charge included)", totals)
	}
	for _, w := range []string{"3 discrepancies need a person", "duplicate_at_bank", "auth_DUPLICATE0001", "declined_after_forward", declined.str("id")} {
		if !strings.Contains(out, w) {
			t.Errorf("the summary does not mention %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, visa) || strings.Contains(out, declining) {
		t.Error("the summary holds a card number")
	}

	// The outputs for finance: the JSON report is what the API serves, the
	// CSV has one row per discrepancy.
	outDir := filepath.Join(filepath.Dir(s.cfg.Database), "reconciliations")
	var fromFile reconcile.Report
	if b, err := os.ReadFile(filepath.Join(outDir, day+".json")); err != nil {
		t.Error(err)
	} else if err := json.Unmarshal(b, &fromFile); err != nil || len(fromFile.Items) != len(rep.Items) || fromFile.RunID != rep.RunID {
		t.Errorf("JSON report: %v, %d items of run %d; want %d of run %d", err, len(fromFile.Items), fromFile.RunID, len(rep.Items), rep.RunID)
	}
	if f, err := os.Open(filepath.Join(outDir, day+"-discrepancies.csv")); err != nil {
		t.Error(err)
	} else {
		rows, err := csv.NewReader(f).ReadAll()
		f.Close()
		if err != nil || len(rows) != 1+3 || rows[0][1] != "category" {
			t.Errorf("CSV of discrepancies: %v, %d rows, want a header and 3", err, len(rows))
		}
	}

	t.Run("ServedToTheManager", func(t *testing.T) {
		g := must(t, s.mgr("GET", "/v1/reconciliations/"+day, nil), 200)
		var served reconcile.Report
		if err := json.Unmarshal(g.raw, &served); err != nil {
			t.Fatal(err)
		}
		if served.RunID != rep.RunID || served.Status != reconcile.Discrepancies || len(served.Items) != len(rep.Items) {
			t.Errorf("GET /v1/reconciliations/%s: run %d %s with %d items, want run %d with %d", day, served.RunID,
				served.Status, len(served.Items), rep.RunID, len(rep.Items))
		}
		wantProblem(t, s.mgr("GET", "/v1/reconciliations/2001-01-01", nil), 404, "reconciliation_not_found")
		wantProblem(t, s.mgr("GET", "/v1/reconciliations/yesterday", nil), 400, "invalid_date")
		wantProblem(t, s.get("/v1/reconciliations/"+day), 403, "forbidden")
	})

	t.Run("ReRunGivesTheSameResult", func(t *testing.T) {
		code, _, _ := s.reconcileCmd("--config", cfgPath, "--date", day)
		if code != 1 {
			t.Fatalf("exit code %d on re-run, want 1", code)
		}
		again, err := reconcile.Last(context.Background(), s.app.DB, day)
		if err != nil {
			t.Fatal(err)
		}
		if again.RunID == rep.RunID {
			t.Error("the re-run did not record a new run")
		}
		strip := func(r reconcile.Report) string {
			r.RunID, r.StartedAt, r.FinishedAt = 0, time.Time{}, time.Time{}
			for i := range r.Summary.Banks {
				r.Summary.Banks[i].Source = ""
			}
			b, _ := json.Marshal(r)
			return string(b)
		}
		if strip(again) != strip(rep) {
			t.Errorf("the re-run's report differs:\n%s\n%s", strip(rep), strip(again))
		}
		var items, runs int
		s.app.DB.Read().QueryRow(`SELECT count(*) FROM reconciliation_items`).Scan(&items)
		s.app.DB.Read().QueryRow(`SELECT count(*) FROM reconciliation_runs`).Scan(&runs)
		if items != len(rep.Items) || runs != 1 {
			t.Errorf("%d item rows in %d runs after a re-run, want %d in 1", items, runs, len(rep.Items))
		}
	})
}

// A night where everything matches exits 0, so cron stays quiet; a report
// given as a file needs no bank at all.
func TestReconcileAllMatchedExitsZero(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{a})
	var p resp
	day := today(t, func() { p = must(t, s.post("/v1/orders/"+s.order(990)+"/payments", cardBody(990, visa, nil)), 201) })
	if err := a.sim.CloseDay(day); err != nil {
		t.Fatal(err)
	}
	report, ok := a.sim.Settlement("", day)
	if !ok {
		t.Fatal("no report")
	}
	file := filepath.Join(t.TempDir(), "bank-a.csv")
	if err := os.WriteFile(file, append([]byte("\ufeff"), report...), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgPath := s.writeConfig()
	jsonPath := filepath.Join(t.TempDir(), "out", "report.json")
	delete(s.env, "BANK_A_KEY") // a file needs no API key
	code, out, err := s.reconcileCmd("--config", cfgPath, "--date", day, "--settlement", "bank-a="+file, "--json", jsonPath, "--csv", "")
	if code != 0 || err != nil {
		t.Fatalf("exit code %d (%v), want 0\n%s", code, err, out)
	}
	if !strings.Contains(out, "everything matched") {
		t.Errorf("summary:\n%s", out)
	}
	rep, err := reconcile.Last(context.Background(), s.app.DB, day)
	if err != nil || rep.Status != reconcile.Clean || len(rep.Items) != 1 || rep.Items[0].PaymentID != p.str("id") {
		t.Errorf("recorded run: %v %+v, want the one payment matched", err, rep)
	}
	if _, err := os.Stat(jsonPath); err != nil {
		t.Errorf("--json: %v", err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(s.cfg.Database), "reconciliations", day+"-discrepancies.csv")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("--csv \"\" still wrote the default CSV: %v", err)
	}
}

// Exit code 2 when the batch cannot run, and nothing is recorded.
func TestReconcileCouldNotRun(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{a})
	cfgPath := s.writeConfig()
	open := time.Now().UTC().Format(time.DateOnly) // not closed by the bank
	garbage := filepath.Join(t.TempDir(), "garbage.csv")
	os.WriteFile(garbage, []byte("<html>maintenance</html>\n"), 0o600)
	for _, tc := range []struct {
		name string
		args []string
		say  string
	}{
		{"NoDate", []string{"--config", cfgPath}, "--date"},
		{"BadDate", []string{"--config", cfgPath, "--date", "21/11/2026"}, "YYYY-MM-DD"},
		{"NoConfig", []string{"--date", "2026-11-21"}, "--config"},
		{"UnreadableConfig", []string{"--config", filepath.Join(t.TempDir(), "none.json"), "--date", "2026-11-21"}, "config"},
		{"UnknownBank", []string{"--config", cfgPath, "--date", "2026-11-21", "--settlement", "bank-z=x.csv"}, "bank-z"},
		{"MissingFile", []string{"--config", cfgPath, "--date", "2026-11-21", "--settlement", "bank-a=" + garbage + ".none"}, "bank-a"},
		{"NotASettlementReport", []string{"--config", cfgPath, "--date", "2026-11-21", "--settlement", "bank-a=" + garbage}, "settlement report"},
		{"DayNotClosedAtTheBank", []string{"--config", cfgPath, "--date", open}, "has not closed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, err := s.reconcileCmd(tc.args...)
			if code != 2 || err == nil || !strings.Contains(err.Error(), tc.say) {
				t.Fatalf("exit code %d, error %v; want 2 and an error that says %q", code, err, tc.say)
			}
		})
	}
	var runs int
	s.app.DB.Read().QueryRow(`SELECT count(*) FROM reconciliation_runs`).Scan(&runs)
	if runs != 0 {
		t.Errorf("%d runs recorded by runs that could not run", runs)
	}
}

func TestBusinessDateYesterday(t *testing.T) {
	now := time.Date(2026, 11, 22, 0, 30, 0, 0, time.FixedZone("CET", 3600))
	if got, _ := businessDate("yesterday", now); got != "2026-11-20" {
		// 00:30 CET is 23:30 UTC the day before: yesterday in UTC is the 20th.
		t.Errorf("yesterday = %s, want 2026-11-20 (UTC)", got)
	}
	if _, err := businessDate("2026-02-30", now); err == nil {
		t.Error("accepted 2026-02-30")
	}
}
