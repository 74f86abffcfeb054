package gameday_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"storepay/gameday"
	"storepay/slo"
)

// build compiles storepay and banksim (without -race: they are the
// processes under test, not this package) into a temporary directory.
func build(t *testing.T) (storepay, banksim string) {
	t.Helper()
	dir := t.TempDir()
	storepay, banksim = filepath.Join(dir, "storepay"), filepath.Join(dir, "banksim")
	// One invocation: the two links run in parallel.
	cmd := exec.Command("go", "build", "-o", dir+string(filepath.Separator), "storepay/cmd/storepay", "storepay/cmd/banksim")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, b)
	}
	return storepay, banksim
}

// TestShortGameDay plays testdata/gameday/ci-short.json (a 4-hour morning
// at 1440x, about 10 s): a primary outage, all banks down, a crash and
// restart, an emergency stop, lost answers. The ledger must hold (no
// double charge, nothing lost), every fault must be seen and recovered
// from, and the only objective missed must be the store's, by exactly the
// crash's down time.
func TestShortGameDay(t *testing.T) {
	plan, err := gameday.Load(filepath.Join("..", "testdata", "gameday", "ci-short.json"))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	storepay, banksim := build(t)
	t.Logf("built the binaries in %s", time.Since(start).Round(time.Millisecond))
	start = time.Now()
	dir := t.TempDir()
	rep, err := gameday.Run(context.Background(), plan, gameday.Options{Storepay: storepay, Banksim: banksim, Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	t.Logf("played the day in %s; report:\n%s", time.Since(start).Round(time.Millisecond), text.String())
	if t.Failed() {
		return
	}
	if len(rep.Failures) > 0 {
		t.Errorf("requests without an answer: %v", rep.Failures)
	}
	if !rep.LedgerHeld || rep.Ledger.CardPayments == 0 || rep.Ledger.Charged == 0 {
		t.Errorf("ledger check: %+v", rep.Ledger)
	}
	if rep.Customers != plan.MaxPayments && rep.Customers < 100 {
		t.Errorf("only %d customers", rep.Customers)
	}
	if rep.Restarts != 1 || rep.DrainSeconds < 0 || rep.QueueLeft != 0 || rep.QueuePeak == 0 {
		t.Errorf("restarts %d, drain %vs, queue left %d, peak %d: want one restart, a queue that filled and drained",
			rep.Restarts, rep.DrainSeconds, rep.QueueLeft, rep.QueuePeak)
	}
	for _, in := range rep.Incidents {
		if in.Error != "" || in.Began.IsZero() || in.Lifted.IsZero() {
			t.Errorf("incident %s %s: %+v", in.At, in.Kind, in)
		}
		if (in.Kind == gameday.BankDown || in.Kind == gameday.AllBanksDown) && (in.FailoverSeconds < 0 || in.BackSeconds < 0) {
			t.Errorf("incident %s %s: failover %v s, back %v s: not seen in the records", in.At, in.Kind, in.FailoverSeconds, in.BackSeconds)
		}
	}
	kinds := map[string]int{}
	var crash slo.Incident
	for _, in := range rep.SLO.Incidents {
		kinds[in.Kind]++
		if in.Kind == slo.Crash {
			crash = in
		}
	}
	if kinds[slo.BankOutage] < 3 || kinds[slo.AllBanksOutage] != 1 || kinds[slo.Crash] != 1 || kinds[slo.EStop] != 1 {
		t.Errorf("SLO incidents by kind = %v, want primary twice and secondary once out, all banks once, a crash, an estop", kinds)
	}
	if !rep.SLO.Payments.Held || rep.SLO.Payments.Offline == 0 || rep.SLO.OfflineOnlySeconds <= 0 {
		t.Errorf("payments %+v, offline-only %v s: want held, some decided offline", rep.SLO.Payments, rep.SLO.OfflineOnlySeconds)
	}
	if rep.SLO.Store.DownSeconds != crash.Seconds || crash.Seconds <= 0 {
		t.Errorf("store down %v s, the crash %v s: the crash should be the only down time", rep.SLO.Store.DownSeconds, crash.Seconds)
	}
	if rep.Passed != (rep.ObjectivesHeld && rep.LedgerHeld) || !strings.Contains(text.String(), "ledger held") {
		t.Errorf("verdict: passed %v, objectives %v, ledger %v", rep.Passed, rep.ObjectivesHeld, rep.LedgerHeld)
	}
}

func TestLoadRefusesBadPlans(t *testing.T) {
	good := `{"name":"x","open":"08:00","close":"20:00","speed":720,"customers_per_hour":10,"mix":{},"max_payments":10`
	for name, body := range map[string]string{
		"unknown field":    good + `,"bogus":1}`,
		"close before":     strings.Replace(good, `"close":"20:00"`, `"close":"07:00"`, 1) + `}`,
		"too long":         strings.Replace(good, `"speed":720`, `"speed":1`, 1) + `}`,
		"unbounded":        strings.Replace(good, `"max_payments":10`, `"max_payments":0`, 1) + `}`,
		"outside hours":    good + `,"incidents":[{"at":"21:00","for":"5m","kind":"crash"}]}`,
		"unknown bank":     good + `,"incidents":[{"at":"10:00","for":"5m","kind":"bank_down","bank":"third"}]}`,
		"slow, no latency": good + `,"incidents":[{"at":"10:00","for":"5m","kind":"bank_slow","bank":"primary"}]}`,
	} {
		path := filepath.Join(t.TempDir(), "plan.json")
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := gameday.Load(path); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for _, p := range []string{"ordinary-day.json", "bad-day.json", "ci-short.json"} {
		if _, err := gameday.Load(filepath.Join("..", "testdata", "gameday", p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}
