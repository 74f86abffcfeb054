package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"storepay/gateway/banksim"
	"storepay/reconcile"
)

// The manager console, driven in a real browser: Debian's chromium,
// headless, on loopback only. .ci/run installs it; without it these tests
// fail (they never skip), so a CI machine without a browser is noticed.
//
//	go test ./cmd/storepay -run Console -screenshots
//
// also writes a screenshot of every page to docs/console-*.png (shown in
// the README).
var screenshots = flag.Bool("screenshots", false, "write the console's screenshots to docs/console-*.png")

const chromiumPath = "/usr/bin/chromium"

// browserTab is one headless chromium tab for a test, with every page
// error and console message it sees.
type browserTab struct {
	t    *testing.T
	ctx  context.Context
	base string

	mu       sync.Mutex
	problems []string
}

func newBrowser(t *testing.T, base string) *browserTab {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("the console's browser tests need Debian's chromium at %s "+
			"(as root: apt-get install -y --no-install-recommends chromium; .ci/run does it): %v", chromiumPath, err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1024, 768),
		// This machine's network is closed: no background traffic.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-sync", true),
	)
	// A watchdog for the whole browser: no test may hang CI.
	watchdog, stop := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(stop)
	actx, cancelAlloc := chromedp.NewExecAllocator(watchdog, opts...)
	t.Cleanup(cancelAlloc)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(cancelTab)
	b := &browserTab{t: t, ctx: ctx, base: base}
	if err := chromedp.Listen(ctx, b.observe); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	b.do("enable the page log", 20*time.Second,
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := cdp.Call(ctx, t, cdplog.Enable, cdp.Empty{})
			return err
		}),
		chromedp.EmulateViewport(1024, 768))
	return b
}

// observe records what the page reports: uncaught exceptions and log
// entries (a Content-Security-Policy violation is one). Responses with an
// error status are expected in these tests and not recorded.
func (b *browserTab) observe(ev any) {
	var p string
	switch e := ev.(type) {
	case *runtime.EventExceptionThrown:
		p = "exception: " + e.ExceptionDetails.Text
		if e.ExceptionDetails.Exception != nil {
			p += " " + e.ExceptionDetails.Exception.Description
		}
	case *cdplog.EventEntryAdded:
		if e.Entry.Source != cdplog.EntrySourceNetwork {
			p = fmt.Sprintf("%s %s: %s (%s)", e.Entry.Source, e.Entry.Level, e.Entry.Text, e.Entry.URL)
		}
	}
	if p != "" {
		b.mu.Lock()
		b.problems = append(b.problems, p)
		b.mu.Unlock()
	}
}

func (b *browserTab) checkNoProblems() {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.problems) > 0 {
		b.t.Errorf("the pages reported:\n%s", strings.Join(b.problems, "\n"))
	}
}

// do runs steps within d.
func (b *browserTab) do(what string, d time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, d)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// open loads a console path and waits for sel.
func (b *browserTab) open(path, sel string) {
	b.t.Helper()
	b.do("open "+path, 20*time.Second, chromedp.Navigate(b.base+path), chromedp.WaitVisible(chromedp.CSS(sel)))
}

// submit clicks a form's button and waits for the page it leads to.
func (b *browserTab) submit(button, thenSel string) {
	b.t.Helper()
	b.do("click "+button, 20*time.Second,
		func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
			_, err := chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.CSS(button), chromedp.NodeVisible))(ctx, t)
			return chromedp.Void{}, err
		},
		chromedp.WaitVisible(chromedp.CSS(thenSel)))
}

// fill sets a field's value, replacing what it held. Not SendKeys:
// chromedp v0.23.0's SendKeys reads the node's attributes outside their
// lock, a data race the race detector reports when a page's live part
// (htmx polling) changes the DOM meanwhile.
func (b *browserTab) fill(sel, text string) {
	b.t.Helper()
	b.do("fill "+sel, 10*time.Second, chromedp.WaitVisible(chromedp.CSS(sel)), chromedp.SetValue(chromedp.CSS(sel), text))
}

func eval[T any](b *browserTab, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitJS waits until expr is true in the page, polling, within d: for the
// page's own refreshes, never to paper over a race.
func (b *browserTab) waitJS(what, expr string, d time.Duration) {
	b.t.Helper()
	deadline := time.Now().Add(d)
	for !eval[bool](b, expr) {
		if time.Now().After(deadline) {
			b.t.Fatalf("timed out after %s waiting for %s (%s)", d, what, expr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (b *browserTab) text(sel string) string {
	b.t.Helper()
	return eval[string](b, fmt.Sprintf(`(document.querySelector(%q) || {innerText: ""}).innerText`, sel))
}

func (b *browserTab) path() string { return eval[string](b, `location.pathname + location.search`) }

// shot saves a full-page screenshot to docs/console-NAME.png when the
// test runs with -screenshots.
func (b *browserTab) shot(name string) {
	b.t.Helper()
	if !*screenshots {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join("..", "..", "docs", "console-"+name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("wrote %s", path)
}

// markPage leaves a mark in the page's JavaScript state: it survives the
// page's own refreshes but not a navigation.
func (b *browserTab) markPage() { eval[bool](b, `(window.__stillHere = true)`) }

func (b *browserTab) stillSamePage() bool { return eval[bool](b, `window.__stillHere === true`) }

// authorizeCalls counts the authorizations a bank has received.
func authorizeCalls(b *bank) int64 {
	var n int64
	for _, u := range b.urls {
		n += b.sim.Ledger().Calls(u, banksim.EndpointAuthorize)
	}
	return n
}

// A manager runs a store through an offline episode from the console:
// signs in, sees the queue a real outage filled, halts forwarding with
// the emergency stop (nothing reaches a bank, whatever is made due),
// then lets it go, and replays a held record, watching the pages update
// by themselves.
func TestConsoleInBrowser(t *testing.T) {
	clearOfMidnight(t, 2*time.Minute) // the episode is reconciled as one business day
	a, bb := startBank(t, "bank-a", 1), startBank(t, "bank-b", 1)
	s := startStore(t, []*bank{a, bb})

	// Business as usual, then every bank goes away: the offline episode.
	online := must(t, s.post("/v1/orders/"+s.order(1200)+"/payments", cardBody(1200, visa, nil)), 201)
	if online.str("status") != "captured" {
		t.Fatalf("online sale: %s", online)
	}
	refuseAll(t, a, bb)
	cards := []string{visa, "4000056655665556", "5555555555554444", "5105105105105100", "4012888888881881"}
	var stored, records []string
	for i, pan := range cards {
		amount := int64(500 + 250*i)
		p := must(t, s.post("/v1/orders/"+s.order(amount)+"/payments", cardBody(amount, pan, nil)), 201)
		if p.str("status") != "stored" || p.str("mode") != "offline" {
			t.Fatalf("payment %d during the outage: %s", i, p)
		}
		stored = append(stored, p.str("id"))
		records = append(records, s.safRecord(p.str("id"))["id"].(string))
	}

	b := newBrowser(t, s.url)
	defer b.checkNoProblems()

	t.Run("TerminalTokenCannotSignIn", func(t *testing.T) {
		b.open("/console", "#token")
		b.shot("login")
		b.fill("#token", s.terminal)
		b.submit(`button[type="submit"]`, "#login-error")
		if msg := b.text("#login-error"); !strings.Contains(msg, "terminal") {
			t.Fatalf("the terminal's sign-in answer: %q", msg)
		}
		if strings.Contains(b.path(), "/console/saf") || eval[bool](b, `!!document.querySelector("header.top")`) {
			t.Fatal("a terminal token reached the console")
		}
	})

	t.Run("ManagerSignsInWithTheKeyboard", func(t *testing.T) {
		b.open("/console", "#token")
		b.do("type the token and press Enter", 20*time.Second,
			func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
				_, err := chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.SendKeys(chromedp.CSS("#token"), s.manager+kb.Enter))(ctx, t)
				return chromedp.Void{}, err
			},
			chromedp.WaitVisible(chromedp.CSS("#live")))
	})

	t.Run("DashboardShowsTheOutage", func(t *testing.T) {
		for _, name := range []string{"bank-a", "bank-b"} {
			if !eval[bool](b, fmt.Sprintf(`!!document.querySelector('#banks tr[data-bank=%q]')`, name)) {
				t.Fatalf("the dashboard does not show %s", name)
			}
		}
		if depth := eval[string](b, `document.querySelector("#queue-depth").dataset.depth`); depth != "5" {
			t.Fatalf("queue depth %s on the dashboard, want 5", depth)
		}
		b.waitJS("the dashboard to say the store sells offline", `document.querySelector("#store-mode").dataset.mode === "offline"`, 15*time.Second)
		if got := b.text("#outstanding"); got != "50.00 USD" {
			t.Fatalf("outstanding %q, want 50.00 USD", got)
		}
		b.shot("dashboard")
	})

	t.Run("QueueListsTheEpisode", func(t *testing.T) {
		b.open("/console/saf", "#queue")
		got := eval[[]string](b, `Array.from(document.querySelectorAll("#queue tr[data-record]")).map(r => r.dataset.payment)`)
		if !slices.Equal(got, stored) {
			t.Fatalf("queue lists payments %v, want %v (oldest first)", got, stored)
		}
		// The forwarder keeps trying the refusing banks, so a record can
		// be caught "forwarding" for the moment of a try; the page, which
		// refreshes itself, shows each back in the queue.
		waiting := `Array.from(document.querySelectorAll("#queue tr[data-record]")).every(r => r.dataset.status === "queued" || r.dataset.status === "forwarding")`
		if !eval[bool](b, waiting) {
			t.Fatal("a record of the episode left the queue while every bank refused")
		}
		b.waitJS("the episode's five records all queued", `document.querySelectorAll('#queue tr[data-status="queued"]').length === 5`, 15*time.Second)
		b.shot("queue")
	})

	t.Run("EmergencyStopHaltsForwarding", func(t *testing.T) {
		b.open("/console/estop", "#estop-form")
		b.do("choose pause", 10*time.Second, chromedp.Click(chromedp.CSS("#state-pause")))
		b.fill("#reason", "count the till")
		b.submit("#estop-apply", ".flash")
		if st := eval[string](b, `document.querySelector("#estop-now").dataset.state`); st != "pause" {
			t.Fatalf("emergency stop %s after pausing", st)
		}
		if h := b.text("#estop-history"); !strings.Contains(h, "boss") || !strings.Contains(h, "count the till") {
			t.Fatalf("history: %s", h)
		}

		// The banks come back, and a manager puts them back in service
		// (which makes every waiting record due at once).
		clearAll(t, a, bb)
		before := authorizeCalls(a) + authorizeCalls(bb)
		b.open("/console/banks", "#bank-form")
		b.fill("#reason", "the banks are back")
		b.submit("#enable-bank-a", ".flash")
		b.fill("#reason", "the banks are back")
		b.submit("#enable-bank-b", ".flash")
		if st := eval[string](b, `document.querySelector("#bank-bank-a").dataset.state`); st != "closed" {
			t.Fatalf("bank-a %s after enabling", st)
		}

		// Replay the whole queue, after a confirmation that counts it.
		b.open("/console/saf", "#replay-all")
		b.submit("#replay-all", "#replay-all-summary")
		if n := eval[string](b, `document.querySelector("#replay-all-summary").dataset.count`); n != "5" {
			t.Fatalf("the confirmation counts %s records, want 5", n)
		}
		if txt := b.text("#replay-all-summary"); !strings.Contains(txt, "5 records, 50.00 USD in all") {
			t.Fatalf("the confirmation says %q", txt)
		}
		b.shot("replay-all")
		b.fill("#reason", "banks are back")
		b.submit("#confirm-replay-all", ".flash")
		if f := b.text(".flash"); !strings.Contains(f, "Replayed the queue") {
			t.Fatalf("after replay all: %q", f)
		}

		// Paused, then stopped: records are due, yet nothing reaches a bank.
		waitNothingSent := func(state string) {
			t.Helper()
			time.Sleep(500 * time.Millisecond) // 25 forwarder scans (20 ms)
			if n := authorizeCalls(a) + authorizeCalls(bb) - before; n != 0 {
				t.Fatalf("%d authorizations reached the banks under %s", n, state)
			}
			for _, id := range stored {
				if c := a.sim.Ledger().ChargesFor(id) + bb.sim.Ledger().ChargesFor(id); c != 0 {
					t.Fatalf("payment %s charged under %s", id, state)
				}
				if st := s.safRecord(id)["status"]; st != "queued" {
					t.Fatalf("record of %s is %v under %s", id, st, state)
				}
			}
		}
		waitNothingSent("pause")

		b.open("/console/estop", "#estop-form")
		b.do("choose stop", 10*time.Second, chromedp.Click(chromedp.CSS("#state-stop")))
		b.fill("#reason", "fraud alert")
		b.submit("#estop-apply", ".flash")
		b.open("/console/saf/"+records[0], "#record-actions")
		b.fill("#reason", "try this one")
		b.submit("#do-replay", ".flash")
		waitNothingSent("stop")
		b.shot("record")
		b.open("/console/estop", "#estop-history")
		b.shot("estop")
	})

	t.Run("HeldRecordStaysWhenForwardingResumes", func(t *testing.T) {
		b.open("/console/saf/"+records[2], "#record-actions")
		b.fill("#reason", "customer disputes")
		b.submit("#do-hold", ".flash")
		if st := eval[string](b, `document.querySelector("#record-status").dataset.status`); st != "held" {
			t.Fatalf("record %s after hold", st)
		}

		// Another manager lets forwarding go (through the manager API);
		// the queue page, left open, shows the records leave by itself.
		b.open("/console/saf", "#queue")
		b.markPage()
		must(t, s.mgr("PUT", "/v1/estop", map[string]any{"state": "go", "reason": "all clear"}), 200)
		b.waitJS("the open queue page to show four records forwarded",
			`document.querySelectorAll('#queue tr[data-status="forwarded"]').length === 4`, 20*time.Second)
		if !b.stillSamePage() {
			t.Fatal("the queue page was reloaded instead of updating itself")
		}
		if st := eval[string](b, fmt.Sprintf(`document.querySelector('#queue tr[data-record=%q]').dataset.status`, records[2])); st != "held" {
			t.Fatalf("the held record is %s", st)
		}
		for i, id := range stored {
			want := 1
			if i == 2 {
				want = 0
			}
			if c := a.sim.Ledger().ChargesFor(id) + bb.sim.Ledger().ChargesFor(id); c != want {
				t.Fatalf("payment %d charged %d times, want %d", i, c, want)
			}
		}
	})

	t.Run("ReplayTurnsTheRecordForwarded", func(t *testing.T) {
		b.open("/console/saf/"+records[2], "#record-actions")
		b.fill("#reason", "customer confirmed the purchase")
		b.submit("#do-replay", ".flash")
		b.markPage()
		b.waitJS("the record page to show it forwarded", `document.querySelector("#record-status").dataset.status === "forwarded"`, 15*time.Second)
		if !b.stillSamePage() {
			t.Fatal("the record page was reloaded instead of updating itself")
		}
		if n := eval[int](b, `document.querySelectorAll("#attempts tbody tr").length`); n < 1 || !strings.Contains(b.text("#attempts"), "approved") {
			t.Fatalf("the record's attempts: %q", b.text("#attempts"))
		}
		if c := a.sim.Ledger().ChargesFor(stored[2]); c != 1 {
			t.Fatalf("the replayed payment was charged %d times at bank-a", c)
		}
		b.shot("record-forwarded")
	})

	t.Run("FormWithoutCSRFTokenIsRefused", func(t *testing.T) {
		b.open("/console/estop", "#estop-form")
		status := eval[int](b, `fetch("/console/estop", {method: "POST", headers: {"Content-Type": "application/x-www-form-urlencoded"},
			body: "state=stop&reason=forged"}).then(r => r.status)`)
		if status != 403 {
			t.Fatalf("a same-origin POST without the CSRF token answered %d, want 403", status)
		}
		if e := s.mgr("GET", "/v1/estop", nil); e.str("state") != "go" {
			t.Fatalf("the refused post changed the emergency stop: %s", e)
		}
	})

	t.Run("PaymentsAndOrders", func(t *testing.T) {
		b.open("/console/payments", "#payments")
		b.fill("#p-last4", "4242")
		b.submit(`form.filters button[type="submit"]`, "#payments")
		got := eval[[]string](b, `Array.from(document.querySelectorAll("#payments tr[data-payment]")).map(r => r.dataset.payment)`)
		if !slices.Contains(got, online.str("id")) || !slices.Contains(got, stored[0]) || len(got) != 2 {
			t.Fatalf("search by last4 4242 found %v", got)
		}
		b.open("/console/payments", "#payments")
		b.shot("payments")
		b.open("/console/payments/"+stored[0], "#events")
		if h := b.text("#events"); !strings.Contains(h, "stored") || !strings.Contains(h, "captured") {
			t.Fatalf("payment history: %s", h)
		}
		b.shot("payment")
		b.open("/console/orders/"+online.str("order_id"), "#lines")
		b.shot("order")
	})

	t.Run("AuditLogShowsTheManagersActions", func(t *testing.T) {
		b.open("/console/audit", "#audit")
		got := b.text("#audit")
		for _, want := range []string{"console.login", "estop.pause", "count the till", "gateway.enable", "saf.replay_all", "estop.stop",
			"saf.hold", "customer disputes", "saf.replay", "customer confirmed the purchase", "estop.go", "all clear"} {
			if !strings.Contains(got, want) {
				t.Errorf("the audit log lacks %q", want)
			}
		}
		b.shot("audit")
	})

	t.Run("ReconciliationOfTheDay", func(t *testing.T) {
		date := strings.SplitN(online.str("created_at"), "T", 2)[0] // the business date (UTC)
		b.open("/console/reconciliation?date="+date, "#reconciliation-none")
		// The banks close the day; bank-a's report also settles a charge
		// the store never made.
		ghost := fmt.Sprintf("B-X,store-042,psp_ghost_0001,ord_ghost,Settled,%s,USD,700,0,700,1111,ZZ9999\n", time.Now().UTC().Format(time.RFC3339))
		if err := a.sim.AddSettlementRows(date, []byte(ghost)); err != nil {
			t.Fatal(err)
		}
		var sources []reconcile.Source
		for _, bk := range []*bank{a, bb} {
			if err := bk.sim.CloseDay(date); err != nil {
				t.Fatal(err)
			}
			report, ok := bk.sim.Settlement("", date)
			if !ok {
				t.Fatalf("%s has no report for %s", bk.name, date)
			}
			sources = append(sources, reconcile.BytesSource(bk.name, "store-042", "banksim "+bk.name, report))
		}
		res, err := reconcile.Reconcile(t.Context(), s.app.DB, reconcile.Input{Date: date, Sources: sources})
		if err != nil {
			t.Fatal(err)
		}
		if err := reconcile.Save(t.Context(), s.app.DB, res); err != nil {
			t.Fatal(err)
		}
		b.open("/console/reconciliation", "#report")
		if st := eval[string](b, `document.querySelector("#report").dataset.status`); st != "discrepancies" {
			t.Fatalf("the night's result: %s", st)
		}
		if n := eval[string](b, `document.querySelector('#categories tr[data-category="missing_in_store"]').dataset.count`); n != "1" {
			t.Fatalf("missing_in_store counts %s, want 1", n)
		}
		if n := eval[string](b, `document.querySelector('#categories tr[data-category="matched"]').dataset.count`); n == "0" {
			t.Fatal("nothing matched")
		}
		b.shot("reconciliation")
	})

	t.Run("DashboardOnline", func(t *testing.T) {
		b.open("/console", "#live")
		b.waitJS("the dashboard to say the store sells online", `document.querySelector("#store-mode").dataset.mode === "online"`, 10*time.Second)
		b.shot("dashboard-online")
		b.open("/console/banks", "#bank-form")
		b.shot("banks")
		b.open("/console", "#live")
		b.do("desktop width", 10*time.Second, chromedp.EmulateViewport(1440, 900))
		b.shot("dashboard-desktop")
		b.do("tablet width", 10*time.Second, chromedp.EmulateViewport(1024, 768))
	})

	t.Run("SignOut", func(t *testing.T) {
		b.open("/console", "#live")
		b.submit(`header.top .who button`, "#token")
		if !strings.Contains(b.text("main"), "signed out") {
			t.Fatalf("after signing out: %s", b.text("main"))
		}
		b.open("/console/saf", "#token")
		if !strings.HasPrefix(b.path(), "/console/login") {
			t.Fatalf("the queue after signing out is at %s", b.path())
		}
	})
	if t.Failed() {
		return
	}
	if err := b.ctx.Err(); errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("the browser's watchdog expired")
	}
}
