package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"storepay/devices"
	"storepay/gateway"
	"storepay/gateway/acquirer"
	"storepay/gateway/iso8583"
	"storepay/migrations"
	"storepay/orders"
	"storepay/saf"
	"storepay/web"
)

// world is one seed's run: a store with its storepay (one incarnation at
// a time: a crash throws the incarnation away and opens the database
// again from its file), the banks, the terminals and the manager, a
// controlled clock and one random source, all drawn from the seed.
//
// Only one actor runs at a time (see sched.go), so everything the seed
// draws is drawn in the same order on every run of the seed.
type world struct {
	seed int64
	opts options
	dir  string

	mu    sync.Mutex // guards rng; the runner is single, but goroutines change
	rng   *rand.Rand
	clock atomic.Int64 // unix nanoseconds

	sched *sched
	banks []*simBank
	inc   *incarnation
	incs  int
	vault *gateway.Vault

	terms   []*terminal
	manager *terminal
	history *history // what terminals asked and heard
	trace   []string
	faults  faultPlan // the storage's faults
	crashes int
	healing bool // the end: no new faults
	// stopping tells the scripts to finish what they are doing.
	stopping   bool
	violations []string
	// calls remembers when each bank call (actor, key, URL) first tried
	// to send, for its budget (see callBudget).
	calls map[string]time.Time
}

// options are what a run is asked for (the command's flags, the tests').
type options struct {
	dir     string // where seeds keep their databases; "" for os.TempDir
	verbose bool
	steps   int // actions in the fault phase
	// jsonOnly: both banks speak acquirer-json, and the seed draws
	// nothing for a protocol: the worlds the simulator made before it
	// covered ISO 8583, where the older regression seeds were found.
	jsonOnly bool
}

func (w *world) now() time.Time { return time.Unix(0, w.clock.Load()).UTC() }

func (w *world) advance(d time.Duration) {
	if d > 0 {
		w.clock.Add(int64(d))
	}
}

// The seed's random source. Every draw happens on the running actor or
// on the writer it waits for, one at a time; the lock only tells the race
// detector so.
func (w *world) intn(n int) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rng.IntN(n)
}

func (w *world) int64n(n int64) int64 {
	if n <= 0 {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rng.Int64N(n)
}

func (w *world) chance(p float64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.rng.Float64() < p
}

func (w *world) text(n int) string {
	const alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	w.mu.Lock()
	defer w.mu.Unlock()
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[w.rng.IntN(len(alphabet))]
	}
	return string(b)
}

func (w *world) newID(prefix string) string { return prefix + strings.ToLower(w.text(20)) }

func (w *world) logf(format string, args ...any) {
	line := fmt.Sprintf("%s %s", w.now().Format("01-02T15:04:05.000"), fmt.Sprintf(format, args...))
	w.mu.Lock()
	w.trace = append(w.trace, line)
	w.mu.Unlock()
}

// incarnation is one life of the storepay process.
type incarnation struct {
	n      int
	db     *migrations.DB
	orders *orders.Service
	queue  *saf.Queue
	router *gateway.Router
	web    *web.Server
	http   http.Handler
	ctx    context.Context
	cancel context.CancelFunc
	dead   atomic.Bool
	// open tells each bank's breaker state as the last probe left it.
	avail map[string]bool
}

// errCrash is what the storage answers once the process is dead.
var errCrash = errors.New("simulated crash: the process is gone")

// faultPlan is what the storage does at each commit.
type faultPlan struct {
	crash   float64 // probability of a crash at a commit boundary
	full    float64 // probability of a full disk at a commit
	fullFor int     // commits still refused by a full disk
}

// dbPath is the seed's database.
func (w *world) dbPath() string { return filepath.Join(w.dir, "storepay.db") }

// open starts a new incarnation on the database file.
func (w *world) open() error {
	w.incs++
	inc := &incarnation{n: w.incs, avail: map[string]bool{}}
	inc.ctx, inc.cancel = context.WithCancel(context.Background())
	db, err := migrations.OpenWith(context.Background(), w.dbPath(), migrations.Options{
		BeforeCommit: func() error { return w.beforeCommit(inc) },
		AfterCommit:  func() { w.afterCommit(inc) },
	})
	if err != nil {
		return fmt.Errorf("open database: %w", err)
	}
	inc.db = db
	log := slog.New(slog.DiscardHandler)
	if w.opts.verbose && os.Getenv("STOREPAY_SIM_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	var specs []gateway.BankSpec
	for _, b := range w.banks {
		spec := gateway.BankSpec{Name: b.name, Policy: simPolicy()}
		if b.iso {
			d := &iso8583.Durable{DB: db, Gateway: b.name, Terminal: "SP042001", Now: w.now}
			for _, u := range b.urls {
				tr := &isoTransport{w: w, inc: inc, bank: b, url: u, switch_: b.switches[u]}
				c, err := iso8583.NewClient(iso8583.Config{URL: u, Gateway: b.name, STANs: d, Now: w.now, Transport: tr.exchange,
					Terminal: iso8583.Terminal{TerminalID: "SP042001", MerchantID: "store-sim", Location: time.UTC}})
				if err != nil {
					return err
				}
				if err := c.Open(); err != nil {
					return err
				}
				ep, err := iso8583.NewEndpoint(iso8583.EndpointConfig{Client: c, Traces: d, Vault: w.vault, Store: d})
				if err != nil {
					return err
				}
				spec.Endpoints = append(spec.Endpoints, ep)
			}
			specs = append(specs, spec)
			continue
		}
		for _, u := range b.urls {
			spec.Endpoints = append(spec.Endpoints, acquirer.New(acquirer.Config{BaseURL: u, APIKey: b.apiKey,
				MerchantID: "store-sim", Gateway: b.name, HTTPClient: &http.Client{Transport: &transport{w: w, inc: inc, bank: b}}}))
		}
		specs = append(specs, spec)
	}
	router, err := gateway.NewRouter(specs, log)
	if err != nil {
		return err
	}
	router.Now = w.now
	inc.router = router
	inc.orders = &orders.Service{DB: db, Bank: router, Vault: w.vault, Log: log, Now: w.now,
		AuthBudget: time.Hour, OpBudget: time.Hour, NewID: w.newID, Jitter: w.int64n}
	inc.queue = &saf.Queue{DB: db, Vault: w.vault, Bank: router, Payments: inc.orders, Log: log, Now: w.now,
		NewID: w.newID, Jitter: w.int64n, Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() },
		Rules:   saf.Rules{FloorLimit: 10000, TotalLimit: 60000, MaxAge: 72 * time.Hour},
		Forward: saf.ForwardPolicy{MaxAttempts: 6, CallTimeout: time.Hour, Interval: -1, GuardMaxErrors: 40}}
	inc.orders.Offline = inc.queue
	if err := web.RestoreDisabledGateways(context.Background(), db, router); err != nil {
		return err
	}
	inc.web = web.New(web.Config{DB: db, Orders: inc.orders, Devices: &devices.Registry{DB: db, Now: w.now}, Router: router,
		SAF: inc.queue, Log: log, Now: w.now,
		// The simulator's terminals undo each other's sales on purpose:
		// that is the coverage it keeps.
		Undo: web.UndoAnyTerminal})
	inc.http = inc.web.Handler()
	for _, b := range w.banks {
		inc.avail[b.name] = true
	}
	w.inc = inc
	w.logf("storepay #%d starts", inc.n)
	// What serve does on start: the queue recovers its records left
	// forwarding; the resolver's first pass is the recovery pass, which
	// the workload runs like any other pass.
	// A full disk at start is waited out, as serve would retry; a crash
	// is buried by the next tick.
	for {
		err := w.sched.runNow(w, "recover", func() error { return inc.queue.Recover(inc.ctx) })
		if err == nil || inc.dead.Load() {
			return nil
		}
		if !migrations.IsStorageFault(err) {
			return err
		}
	}
}

// simPolicy is the banks' failsafe-go policies for the simulator: the
// real policies, with every wall-clock wait out of the way (the
// simulator's banks answer at once, and its clock is not the wall
// clock): timeouts and budgets of an hour that never run out, backoffs
// of a microsecond, breaker windows and delays of an hour (a breaker is
// half-opened by a healthy probe, as in a store).
func simPolicy() gateway.Policy {
	return gateway.Policy{AttemptTimeout: time.Hour, MaxAttempts: 4, BackoffMin: time.Microsecond, BackoffMax: time.Microsecond,
		BreakerFailureRate: 0.5, BreakerMinCalls: 5, BreakerWindow: time.Hour, BreakerDelay: time.Hour, BreakerSuccesses: 2,
		MaxConcurrent: 64, ProbeInterval: time.Hour, MaxRetryAfter: time.Minute}
}

// beforeCommit is the storage's fault at a commit boundary: the writer
// calls it while the running actor waits for its write.
func (w *world) beforeCommit(inc *incarnation) error {
	if inc.dead.Load() {
		return errCrash
	}
	if w.healing {
		return nil
	}
	if w.faults.fullFor > 0 {
		w.faults.fullFor--
		return fmt.Errorf("simulated full disk: %w", migrations.ErrStorageFault)
	}
	if w.chance(w.faults.full) {
		w.faults.fullFor = w.intn(4)
		w.logf("disk full at a commit")
		return fmt.Errorf("simulated full disk: %w", migrations.ErrStorageFault)
	}
	if w.chance(w.faults.crash) {
		w.logf("CRASH before a commit")
		w.die(inc)
		return errCrash
	}
	return nil
}

// afterCommit may crash the process once a commit is on disk, before
// anybody hears of it.
func (w *world) afterCommit(inc *incarnation) {
	if inc.dead.Load() || w.healing {
		return
	}
	if w.chance(w.faults.crash / 2) {
		w.logf("CRASH after a commit")
		w.die(inc)
	}
}

// die marks the incarnation dead: its bank calls are never sent, its
// answers never reach a terminal, its writes fail. The scheduler buries
// it once the running actor stops.
func (w *world) die(inc *incarnation) {
	if inc.dead.Swap(true) {
		return
	}
	w.crashes++
	inc.cancel()
	inc.queue.Close() // its forwarder stops retrying an outcome the dead disk refuses
}

// bury finishes every actor of a dead incarnation (each sees it dead at
// once and ends), closes what it held and starts the next one.
func (w *world) bury() error {
	inc := w.inc
	w.sched.finishDead(w, inc)
	inc.queue.Close()
	inc.router.Close()
	if err := inc.db.Close(); err != nil && !errors.Is(err, errCrash) {
		w.logf("close after the crash: %v", err)
	}
	return w.open()
}

// The template database (see copyTemplate).
var (
	templateOnce  sync.Once
	templateBytes []byte
	templateErr   error
)
