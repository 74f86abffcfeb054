package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"storepay/devices"
	"storepay/gateway"
	"storepay/migrations"
)

// result is one seed's outcome.
type result struct {
	seed       int64
	violations []string
	trace      []string
	stats      stats
}

// stats are counts for the summary: Jepsen's total-queue categories over
// accepted payments, and what the run went through.
type stats struct {
	ok, lost, duplicated, unexpected, recovered int
	payments, crashes, requests                 int
}

func (s *stats) add(o stats) {
	s.ok += o.ok
	s.lost += o.lost
	s.duplicated += o.duplicated
	s.unexpected += o.unexpected
	s.recovered += o.recovered
	s.payments += o.payments
	s.crashes += o.crashes
	s.requests += o.requests
}

// epoch is where every seed's clock starts: a weekday morning, 5 hours
// before the banks close their business day (midnight UTC), so that
// runs cross day boundaries and settle captures.
var epoch = time.Date(2026, 6, 2, 19, 0, 0, 0, time.UTC)

// runSeed runs one seed in its own folder under dir and returns what it
// found. A panic of storepay (or of the simulator) is a violation too.
func runSeed(seed int64, opts options) (res result) {
	res.seed = seed
	dir, err := os.MkdirTemp(opts.dir, fmt.Sprintf("seed-%d-", seed))
	if err != nil {
		res.violations = append(res.violations, "simulator: "+err.Error())
		return res
	}
	defer os.RemoveAll(dir)
	w := &world{seed: seed, opts: opts, dir: dir, rng: rand.New(rand.NewPCG(uint64(seed), 0x5707e9a7)),
		sched: newSched(), history: newHistory(), calls: map[string]time.Time{}}
	w.clock.Store(epoch.Add(time.Duration(seed%3600) * time.Second).UnixNano())
	defer func() {
		if p := recover(); p != nil {
			res.violations = append(res.violations, fmt.Sprintf("panic: %v", p))
		}
		res.trace = w.trace
	}()
	if err := w.setUp(); err != nil {
		res.violations = append(res.violations, "set-up: "+err.Error())
		return res
	}
	w.faultPhase()
	w.heal()
	res.violations = append(res.violations, w.check(&res.stats)...)
	res.stats.crashes = w.crashes
	w.shutDown()
	return res
}

// setUp makes the banks, the card key, the database with its devices,
// the first incarnation and the terminals' scripts.
func (w *world) setUp() error {
	// bank-b is an ISO 8583 switch in half the seeds.
	iso := !w.opts.jsonOnly && w.intn(2) == 0 // bank-b speaks ISO 8583 in half the worlds
	w.banks = []*simBank{newBank(w, "bank-a", 2, false), newBank(w, "bank-b", 1, iso)}
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(w.intn(256))
	}
	vault, err := gateway.NewVault(key)
	if err != nil {
		return err
	}
	w.vault = vault
	if err := copyTemplate(w.dbPath()); err != nil {
		return err
	}
	db, err := migrations.Open(context.Background(), w.dbPath())
	if err != nil {
		return err
	}
	reg := &devices.Registry{DB: db, Now: w.now}
	n := 2 + w.intn(3)
	for i := 0; i < n; i++ {
		t := &terminal{w: w, name: fmt.Sprintf("lane-%d", i+1)}
		if t.token, err = reg.Enroll(context.Background(), t.name, devices.RoleTerminal); err != nil {
			return err
		}
		w.terms = append(w.terms, t)
	}
	w.manager = &terminal{w: w, name: "manager", manager: true}
	if w.manager.token, err = reg.Enroll(context.Background(), "manager", devices.RoleManager); err != nil {
		return err
	}
	if err := db.Close(); err != nil {
		return err
	}
	// The seed's weather: how often the storage fails and the process
	// dies.
	w.faults = faultPlan{crash: []float64{0, 0.01, 0.03}[w.intn(3)], full: []float64{0, 0.005}[w.intn(2)]}
	if err := w.open(); err != nil {
		return err
	}
	for _, t := range w.terms {
		t.actor = w.sched.spawn(t.name, nil, true, t.run)
	}
	w.manager.actor = w.sched.spawn("manager", nil, true, w.manager.managerRun)
	return nil
}

// faultPhase is the store's day with faults: actors run in the seed's
// order while time passes, banks fail and recover, the storage fills
// and the process crashes.
func (w *world) faultPhase() {
	steps := w.opts.steps
	if steps == 0 {
		steps = 400
	}
	for i := 0; i < steps; i++ {
		w.tick(true)
	}
	w.stopping = true
}

// tick is one step of the world: the seed picks what happens next.
func (w *world) tick(faults bool) {
	if w.inc.dead.Load() {
		w.must(w.bury())
		return
	}
	run := w.sched.runnable(w.now())
	switch n := w.intn(100); {
	case n < 55 && len(run) > 0:
		w.sched.resume(run[w.intn(len(run))])
	case n < 72:
		w.worker([]string{"resolver", "forwarder", "forwarder", "prober", "resolver"}[w.intn(5)])
	case n < 76 && faults:
		w.weather()
	case n < 77:
		w.worker("pruner")
	default:
		w.passTime(faults)
	}
}

// passTime moves the clock: mostly seconds, sometimes minutes, now and
// then hours or days (past the idempotency keys' 72 hours and the banks'
// 7 days), and never past what a parked script waits for when nothing
// else can run.
func (w *world) passTime(faults bool) {
	var d time.Duration
	switch n := w.intn(1000); {
	case n < 700:
		d = time.Duration(w.int64n(int64(5 * time.Second)))
	case n < 960:
		d = time.Duration(w.int64n(int64(5 * time.Minute)))
	case n < 985 || !faults:
		d = time.Duration(w.int64n(int64(3 * time.Hour)))
	default:
		d = time.Duration(w.int64n(int64(8 * 24 * time.Hour)))
	}
	// Most bank calls in flight get their answer before time moves on:
	// a bank answers in milliseconds. The others wait, and may run out of
	// time (a slow bank).
	if d > time.Second {
		for _, a := range append([]*actor(nil), w.sched.actors...) {
			if atBank(a) && !a.ended && w.chance(0.8) {
				w.sched.resume(a)
			}
		}
	}
	if len(w.sched.runnable(w.now())) == 0 {
		if t := w.sched.earliest(); !t.IsZero() && t.After(w.now()) {
			d = max(d, t.Sub(w.now()))
		}
	}
	if d > time.Hour {
		w.logf("%s pass", d.Round(time.Minute))
	}
	w.advance(d)
}

// atBank says whether a is parked on its way to or from a bank.
func atBank(a *actor) bool {
	return strings.HasPrefix(a.at, "about to send") || strings.HasPrefix(a.at, "answer on its way")
}

// weather changes one bank's fault.
func (w *world) weather() {
	b := w.banks[w.intn(len(w.banks))]
	m := modeUp
	if w.chance(0.6) {
		m = faultMode(1 + w.intn(int(numModes)-1))
	}
	if m != b.mode {
		w.logf("%s is now %s", b.name, m)
		b.mode = m
	}
}

// worker runs one pass of a background worker of the current
// incarnation as an actor, unless one is running already.
func (w *world) worker(name string) {
	inc := w.inc
	for _, a := range w.sched.actors {
		if a.inc == inc && a.name == name {
			return
		}
	}
	var fn func()
	switch name {
	case "resolver":
		fn = func() { inc.orders.Resolve(inc.ctx) }
	case "forwarder":
		fn = func() { inc.queue.Step(inc.ctx) }
	case "pruner":
		fn = func() { inc.web.Prune(inc.ctx) }
	case "prober":
		fn = func() { w.probe(inc) }
	}
	w.sched.resume(w.sched.spawn(name, inc, false, fn))
}

// workerToEnd runs a worker's pass to its end, its bank calls answered
// at once: the end of the day, when banks are healthy.
func (w *world) workerToEnd(name string) {
	w.worker(name)
	for i := 0; ; i++ {
		var a *actor
		for _, b := range w.sched.actors {
			if b.inc == w.inc && b.name == name {
				a = b
			}
		}
		if a == nil || w.inc.dead.Load() {
			return
		}
		if i > 100000 {
			panic("simulator: " + name + " does not end")
		}
		w.sched.resume(a)
	}
}

// probe is the health prober's pass, and what follows a bank's recovery
// in storepay (the router's OnAvailable watchers, run here in the
// prober's actor rather than in goroutines of their own).
func (w *world) probe(inc *incarnation) {
	inc.router.ProbeOnce(inc.ctx)
	for _, st := range inc.router.Statuses() {
		up := st.State == "closed" || st.State == "half_open"
		if up && !inc.avail[st.Name] && !inc.dead.Load() {
			inc.orders.BankAvailable(inc.ctx, st.Name)
			inc.queue.BankAvailable(inc.ctx, st.Name)
		}
		inc.avail[st.Name] = up
	}
}

// heal lifts every fault and lets the store settle: the terminals finish
// what they were doing, the manager sets the emergency stop to go,
// enables the banks and releases what is held, and the workers run as
// time passes, until nothing is owed to a bank or a bound of simulated
// time passed.
func (w *world) heal() {
	w.healing = true
	for _, b := range w.banks {
		b.mode = modeUp
	}
	w.logf("HEAL: faults lifted")
	for i := 0; i < 20000 && w.scriptsRunning(); i++ {
		w.tick(false)
	}
	if w.scriptsRunning() {
		w.violation("liveness: terminal scripts still running after the faults were lifted")
	}
	// Everything left of the dead: a crash during the last steps.
	if w.inc.dead.Load() {
		w.must(w.bury())
	}
	for len(w.sched.actors) > 0 {
		w.sched.resume(w.sched.actors[0])
	}
	healed := w.now()
	w.manage(func(m *terminal) {
		m.managerPut("/v1/estop", map[string]any{"state": "go", "reason": "end of day"})
		for _, b := range w.banks {
			m.managerPost("/v1/gateways/"+b.name+"/enable", map[string]any{})
		}
	})
	for round := 0; ; round++ {
		owed, err := w.owed()
		if err != nil {
			w.violation("check: " + err.Error())
			return
		}
		if owed == 0 {
			w.logf("settled %s after the faults were lifted", w.now().Sub(healed).Round(time.Second))
			return
		}
		if w.now().Sub(healed) > settleBound {
			w.violation(fmt.Sprintf("liveness: %d operations or records still owed to a bank %s after every fault was lifted", owed, settleBound))
			return
		}
		// Minutes at first; then, with only the slow cases left (a refund
		// found in the next day's settlement report), quarter hours.
		step := time.Minute
		if round > 60 {
			step = 15 * time.Minute
		}
		w.advance(step)
		w.workerToEnd("prober")
		w.workerToEnd("resolver")
		if round%5 == 4 {
			w.manage(func(m *terminal) {
				m.managerPost("/v1/saf/replay", map[string]any{"reason": "end of day"})
				for _, id := range w.expired() {
					m.managerPost("/v1/saf/"+id+"/replay", map[string]any{"reason": "end of day"})
				}
			})
		}
		w.workerToEnd("forwarder")
	}
}

// settleBound is how long, once every fault is lifted, every unknown
// outcome and every stored payment may take to be settled with its bank:
// a day and a half, for a refund behind a bank that kept a failure as its
// key's answer, which only the next day's settlement report shows made.
const settleBound = 36 * time.Hour

func (w *world) scriptsRunning() bool {
	for _, a := range w.sched.actors {
		if a.script {
			return true
		}
	}
	return false
}

// manage runs fn as the manager's script, to its end.
func (w *world) manage(fn func(m *terminal)) {
	m := w.manager
	m.actor = w.sched.spawn("manager", nil, true, func() { fn(m) })
	for i := 0; !m.actor.ended; i++ {
		if i > 1000 {
			panic("simulator: the manager's actions do not end")
		}
		if run := w.sched.runnable(w.now()); len(run) > 0 {
			w.sched.resume(run[0])
		} else {
			w.advance(time.Second)
		}
	}
}

// owed counts pending operations and records not yet final.
func (w *world) owed() (int, error) {
	var n, m int
	db := w.inc.db.Read()
	if err := db.QueryRow(`SELECT count(*) FROM payments WHERE pending_op <> ''`).Scan(&n); err != nil {
		return 0, err
	}
	if err := db.QueryRow(`SELECT count(*) FROM saf_records WHERE status IN ('queued', 'forwarding', 'held', 'expired')`).Scan(&m); err != nil {
		return 0, err
	}
	return n + m, nil
}

func (w *world) expired() []string {
	rows, err := w.inc.db.Read().Query(`SELECT id FROM saf_records WHERE status IN ('expired', 'held') ORDER BY id`)
	if err != nil {
		return nil
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		rows.Scan(&id)
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func (w *world) violation(s string) {
	w.logf("VIOLATION: %s", s)
	w.violations = append(w.violations, s)
}

func (w *world) must(err error) {
	if err != nil {
		panic(err)
	}
}

func (w *world) shutDown() {
	inc := w.inc
	inc.dead.Store(true)
	inc.cancel()
	inc.queue.Close()
	inc.router.Close()
	inc.db.Close()
	for _, b := range w.banks {
		b.sim.Close()
	}
}

// copyTemplate gives a seed a database with every migration applied,
// copied from one made once per process: applying ten migrations to
// every seed's file would cost more than the seed's run.
func copyTemplate(path string) error {
	templateOnce.Do(func() {
		dir, err := os.MkdirTemp("", "storepay-sim-template-")
		if err != nil {
			templateErr = err
			return
		}
		p := filepath.Join(dir, "template.db")
		db, err := migrations.Open(context.Background(), p)
		if err != nil {
			templateErr = err
			return
		}
		if err := db.Close(); err != nil {
			templateErr = err
			return
		}
		templateBytes, templateErr = os.ReadFile(p)
		os.RemoveAll(dir)
	})
	if templateErr != nil {
		return templateErr
	}
	return os.WriteFile(path, templateBytes, 0o600)
}
