package gameday

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"storepay/migrations"
	"storepay/slo"
)

// Options are the binaries a game day runs and where it keeps its files.
type Options struct {
	Storepay string    // the storepay binary
	Banksim  string    // the banksim binary
	Dir      string    // database, config and process logs
	Progress io.Writer // a line per incident as it happens (nil: none)
}

// Report is what a game day measured.
type Report struct {
	Plan      string            `json:"plan"`
	Started   time.Time         `json:"started"`
	Ended     time.Time         `json:"ended"`
	Customers int               `json:"customers"`
	Actions   map[string]int    `json:"actions"`
	Outcomes  map[string]int    `json:"outcomes"` // what the tills were answered
	ByStatus  map[string]int    `json:"payments_by_status"`
	Requests  int64             `json:"requests"`
	Repeats   int64             `json:"repeats"` // requests sent again after a lost answer
	Failures  []string          `json:"failures,omitempty"`
	Incidents []IncidentOutcome `json:"incidents"`
	Restarts  int               `json:"restarts"`

	QueuePeak          int64   `json:"queue_peak"`
	DrainSeconds       float64 `json:"drain_seconds"` // from the last fault lifted to an empty queue; -1: not drained
	QueueLeft          int64   `json:"queue_left"`
	SLO                slo.Report
	Ledger             LedgerCheck `json:"ledger"`
	ObjectivesHeld     bool        `json:"objectives_held"`
	LedgerHeld         bool        `json:"ledger_held"`
	Passed             bool        `json:"passed"`
	RealSecondsPerPlan float64     `json:"real_seconds_per_plan_second"`
}

// IncidentOutcome is one planned incident as it happened, in real time.
type IncidentOutcome struct {
	Incident
	Began, Lifted time.Time
	// FailoverSeconds: from the fault to the primary's breaker opening
	// (payments go to the secondary or offline); BackSeconds: from the
	// fault lifted to the breaker closed again. -1 when not seen.
	FailoverSeconds float64 `json:"failover_seconds"`
	BackSeconds     float64 `json:"back_seconds"`
	Error           string  `json:"error,omitempty"`
}

// LedgerCheck compares storepay's payments with the banks' ledgers.
type LedgerCheck struct {
	CardPayments int      `json:"card_payments"`
	Charged      int      `json:"charged"`        // payments the banks hold exactly one charge for
	DoubleCharge []string `json:"double_charged"` // payments charged more than once
	Lost         []string `json:"lost"`           // payments storepay took that no bank charged
	Unexpected   []string `json:"unexpected"`     // charges for payments storepay did not take
	Unresolved   []string `json:"unresolved"`     // still pending or queued at the end
}

func (l LedgerCheck) held() bool {
	return len(l.DoubleCharge) == 0 && len(l.Lost) == 0 && len(l.Unexpected) == 0 && len(l.Unresolved) == 0
}

// Run plays the plan. An error means the game day could not run (a
// process did not start); a failed objective or ledger check is in the
// report (Passed false).
func Run(ctx context.Context, plan Plan, opts Options) (rep Report, err error) {
	if err := plan.Check(); err != nil {
		return Report{}, err
	}
	progress := func(format string, args ...any) {
		if opts.Progress != nil {
			fmt.Fprintf(opts.Progress, format+"\n", args...)
		}
	}
	var banks []*bank
	defer func() {
		for _, b := range banks {
			b.proc.kill()
		}
	}()
	for _, name := range []string{"primary", "secondary"} {
		b, err := startBank(opts.Dir, opts.Banksim, name)
		if err != nil {
			return Report{}, err
		}
		banks = append(banks, b)
	}
	st, err := newStore(ctx, opts.Dir, opts.Storepay, banks)
	if err != nil {
		return Report{}, err
	}
	defer func() {
		if st.proc != nil {
			st.proc.kill()
		}
	}()
	term := &terminal{s: st, client: &http.Client{Timeout: 40 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}}

	rep = Report{Plan: plan.Name, Started: time.Now().UTC(), RealSecondsPerPlan: 1 / plan.Speed}
	open, _ := clock(plan.Open)
	closeAt, _ := clock(plan.Close)
	realAt := func(planT time.Duration) time.Time {
		return rep.Started.Add(time.Duration(float64(planT-open) / plan.Speed))
	}
	sleepUntil := func(t time.Time) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Until(t)):
			return true
		}
	}

	// The queue monitor.
	mon := &queueMonitor{}
	monCtx, monStop := context.WithCancel(ctx)
	var monWG sync.WaitGroup
	monWG.Add(1)
	go func() {
		defer monWG.Done()
		mon.run(monCtx, term)
	}()

	// The incidents.
	var storeMu sync.Mutex // guards st.proc across crash and restart
	outcomes := make([]IncidentOutcome, len(plan.Incidents))
	var incWG sync.WaitGroup
	for i, in := range plan.Incidents {
		incWG.Add(1)
		go func() {
			defer incWG.Done()
			at, _ := clock(in.At)
			out := IncidentOutcome{Incident: in, FailoverSeconds: -1, BackSeconds: -1}
			defer func() { outcomes[i] = out }()
			if !sleepUntil(realAt(at)) {
				return
			}
			out.Began = time.Now().UTC()
			progress("%s  %s %s begins (%s)", in.At, in.Kind, in.Bank, in.For.Duration)
			if err := apply(in, banks, st, term, &storeMu, true); err != nil {
				out.Error = err.Error()
			}
			sleepUntil(out.Began.Add(time.Duration(float64(in.For.Duration) / plan.Speed)))
			if err := apply(in, banks, st, term, &storeMu, false); err != nil && out.Error == "" {
				out.Error = err.Error()
			}
			out.Lifted = time.Now().UTC()
			mon.lifted(out.Lifted)
			progress("%s  %s %s lifted", in.At, in.Kind, in.Bank)
		}()
	}

	// The customers.
	tl := &tally{actions: map[string]int{}, outcomes: map[string]int{}}
	rng := rand.New(rand.NewPCG(uint64(plan.Seed), 0x9e3779b97f4a7c15))
	sem := make(chan struct{}, 16)
	var custWG sync.WaitGroup
	customers := 0
	for m := open; m < closeAt && customers < plan.MaxPayments; m += time.Minute {
		if !sleepUntil(realAt(m)) {
			break
		}
		n := poisson(rng, plan.CustomersPerHour/60*factor(plan.Peaks, m))
		for range n {
			if customers >= plan.MaxPayments {
				break
			}
			customers++
			seed := rng.Uint64()
			sem <- struct{}{}
			custWG.Add(1)
			go func() {
				defer custWG.Done()
				defer func() { <-sem }()
				term.customer(ctx, rand.New(rand.NewPCG(seed, 1)), plan.Mix, tl)
			}()
		}
	}
	custWG.Wait()
	incWG.Wait()
	rep.Customers = customers
	rep.Incidents = outcomes

	// Closing: every fault lifted, forwarding on, the queue drains.
	for _, b := range banks {
		b.clearFaults()
	}
	term.do(ctx, http.MethodPut, "/v1/estop", st.manager, "", map[string]any{"state": "go", "reason": "game day: closing"})
	mon.lifted(time.Now().UTC())
	drained := mon.waitEmpty(ctx, plan.DrainTimeout.Duration)
	monStop()
	monWG.Wait()
	rep.QueuePeak, rep.QueueLeft = mon.peak, mon.last
	rep.DrainSeconds = -1
	if drained {
		rep.DrainSeconds = math.Max(0, mon.emptyAt.Sub(mon.liftedAt).Seconds())
	}
	storeMu.Lock()
	stopErr := st.proc.stop(30 * time.Second)
	st.proc = nil
	storeMu.Unlock()
	rep.Ended = time.Now().UTC()
	rep.Restarts = st.starts - 1
	if stopErr != nil {
		rep.Failures = append(rep.Failures, "storepay did not stop cleanly: "+stopErr.Error())
	}

	tl.mu.Lock()
	rep.Actions, rep.Outcomes = tl.actions, tl.outcomes
	rep.Failures = append(rep.Failures, tl.failures...)
	tl.mu.Unlock()
	rep.Requests, rep.Repeats = term.requests.Load(), term.repeats.Load()

	db, err := slo.OpenReadOnly(filepath.Join(opts.Dir, "storepay.db"))
	if err != nil {
		return rep, err
	}
	defer db.Close()
	if rep.SLO, err = slo.Compute(ctx, db, slo.Options{From: rep.Started, To: rep.Ended.Add(time.Millisecond), Banks: []string{"primary", "secondary"}}); err != nil {
		return rep, err
	}
	if err := failoverTimes(ctx, db, rep.Incidents); err != nil {
		return rep, err
	}
	if rep.ByStatus, rep.Ledger, err = checkLedger(ctx, db, banks); err != nil {
		return rep, err
	}
	rep.ObjectivesHeld = rep.SLO.Held
	rep.LedgerHeld = rep.Ledger.held()
	rep.Passed = rep.ObjectivesHeld && rep.LedgerHeld && len(tl.failures) == 0
	return rep, nil
}

// apply switches an incident on (on) or off.
func apply(in Incident, banks []*bank, st *store, term *terminal, storeMu *sync.Mutex, on bool) error {
	pick := func() []*bank {
		switch in.Bank {
		case "primary":
			return banks[:1]
		case "secondary":
			return banks[1:2]
		}
		return banks
	}
	switch in.Kind {
	case BankDown, AllBanksDown, BankSlow, LostResponses:
		var errs []error
		for _, b := range pick() {
			if !on {
				errs = append(errs, b.clearFaults())
				continue
			}
			f := map[string]any{"refuse": true}
			switch in.Kind {
			case BankSlow:
				f = map[string]any{"latency": map[string]any{"fixed": in.Latency.String()}}
			case LostResponses:
				f = map[string]any{"drop_after_apply": map[string]any{"probability": in.Probability}}
			}
			errs = append(errs, b.setFaults(f))
		}
		return errors.Join(errs...)
	case Crash:
		storeMu.Lock()
		defer storeMu.Unlock()
		if on {
			st.proc.kill()
			return nil
		}
		return st.start()
	case DiskFull:
		storeMu.Lock()
		defer storeMu.Unlock()
		return diskNearlyFull(st.proc, filepath.Join(st.dir, "storepay.db"), on)
	case EStop:
		state := "stop"
		if !on {
			state = "go"
		}
		a, err := term.do(context.Background(), http.MethodPut, "/v1/estop", st.manager, "", map[string]any{"state": state, "reason": "game day"})
		if err == nil && a.status != http.StatusOK {
			err = fmt.Errorf("estop %s: %d %v", state, a.status, a.body)
		}
		return err
	}
	return fmt.Errorf("unknown incident kind %q", in.Kind)
}

// factor is the arrival rate's multiplier at plan time t.
func factor(peaks []Peak, t time.Duration) float64 {
	f := 1.0
	for _, p := range peaks {
		from, _ := clock(p.From)
		to, _ := clock(p.To)
		if t >= from && t < to {
			f *= p.Factor
		}
	}
	return f
}

// poisson draws a Poisson count with mean lambda (Knuth; lambda is small:
// customers per plan minute).
func poisson(rng *rand.Rand, lambda float64) int {
	if lambda <= 0 {
		return 0
	}
	l, k, p := math.Exp(-lambda), 0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// queueMonitor samples the store-and-forward queue.
type queueMonitor struct {
	mu       sync.Mutex
	peak     int64
	last     int64
	liftedAt time.Time
	emptyAt  time.Time
}

func (m *queueMonitor) lifted(t time.Time) {
	m.mu.Lock()
	if t.After(m.liftedAt) {
		m.liftedAt, m.emptyAt = t, time.Time{}
	}
	m.mu.Unlock()
}

func (m *queueMonitor) run(ctx context.Context, term *terminal) {
	for {
		a, err := term.once(ctx, http.MethodGet, "/v1/saf/stats", term.s.manager, "", nil)
		if err == nil && a.status == http.StatusOK {
			n, _ := a.body["outstanding_count"].(float64)
			now := time.Now().UTC()
			m.mu.Lock()
			m.last = int64(n)
			m.peak = max(m.peak, int64(n))
			if n == 0 && m.emptyAt.IsZero() && !m.liftedAt.IsZero() {
				m.emptyAt = now
			} else if n > 0 {
				m.emptyAt = time.Time{}
			}
			m.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitEmpty waits until the queue is seen empty after the last lift.
func (m *queueMonitor) waitEmpty(ctx context.Context, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		m.mu.Lock()
		ok := !m.emptyAt.IsZero()
		m.mu.Unlock()
		if ok {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// failoverTimes fills each bank incident's failover and back times from
// the primary's (or, for all banks, the primary's) recorded breaker
// changes.
func failoverTimes(ctx context.Context, db *sql.DB, incs []IncidentOutcome) error {
	for i := range incs {
		in := &incs[i]
		if in.Began.IsZero() || (in.Kind != BankDown && in.Kind != AllBanksDown && in.Kind != BankSlow) {
			continue
		}
		bank := in.Bank
		if bank == "" {
			bank = "primary"
		}
		var opened, closed string
		err := db.QueryRowContext(ctx, `SELECT coalesce(min(at), '') FROM availability_events WHERE source = 'gateway' AND name = ? AND state = 'open' AND at >= ?`,
			bank, migrations.FormatTime(in.Began)).Scan(&opened)
		if err != nil {
			return fmt.Errorf("failover times: %w", err)
		}
		if t, _ := migrations.ParseTime(opened); !t.IsZero() && (in.Lifted.IsZero() || t.Before(in.Lifted)) {
			in.FailoverSeconds = t.Sub(in.Began).Seconds()
		}
		if in.Lifted.IsZero() {
			continue
		}
		err = db.QueryRowContext(ctx, `SELECT coalesce(min(at), '') FROM availability_events WHERE source = 'gateway' AND name = ? AND state = 'closed' AND at >= ?`,
			bank, migrations.FormatTime(in.Lifted)).Scan(&closed)
		if err != nil {
			return fmt.Errorf("failover times: %w", err)
		}
		if t, _ := migrations.ParseTime(closed); !t.IsZero() && in.FailoverSeconds >= 0 {
			in.BackSeconds = t.Sub(in.Lifted).Seconds()
		}
	}
	return nil
}

// checkLedger compares every card payment with the banks' charges under
// its id: one approved authorization for a payment storepay took, none
// for one it declined or voided, never two.
func checkLedger(ctx context.Context, db *sql.DB, banks []*bank) (map[string]int, LedgerCheck, error) {
	charges := map[string]int{}
	for _, b := range banks {
		auths, err := b.ledger()
		if err != nil {
			return nil, LedgerCheck{}, err
		}
		for _, a := range auths {
			if a.Status == "approved" {
				charges[a.Reference]++
			}
		}
	}
	rows, err := db.QueryContext(ctx, `SELECT id, method, status FROM payments ORDER BY created_at, id`)
	if err != nil {
		return nil, LedgerCheck{}, fmt.Errorf("ledger check: %w", err)
	}
	defer rows.Close()
	byStatus := map[string]int{}
	var lc LedgerCheck
	seen := map[string]bool{}
	for rows.Next() {
		var id, method, status string
		if err := rows.Scan(&id, &method, &status); err != nil {
			return nil, LedgerCheck{}, fmt.Errorf("ledger check: %w", err)
		}
		byStatus[method+" "+status]++
		if method != "card" {
			continue
		}
		seen[id] = true
		lc.CardPayments++
		n := charges[id]
		switch status {
		case "authorized", "captured", "partially_refunded", "refunded":
			switch {
			case n == 1:
				lc.Charged++
			case n == 0:
				lc.Lost = append(lc.Lost, id)
			default:
				lc.DoubleCharge = append(lc.DoubleCharge, id)
			}
		case "declined", "voided", "declined_after_forward":
			if n > 0 {
				lc.Unexpected = append(lc.Unexpected, id)
			}
		default: // pending, stored: not settled by the end of the day
			lc.Unresolved = append(lc.Unresolved, id+" ("+status+")")
			if n > 1 {
				lc.DoubleCharge = append(lc.DoubleCharge, id)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, LedgerCheck{}, fmt.Errorf("ledger check: %w", err)
	}
	var refs []string
	for ref := range charges {
		if !seen[ref] {
			refs = append(refs, ref)
		}
	}
	sort.Strings(refs)
	lc.Unexpected = append(lc.Unexpected, refs...)
	return byStatus, lc, nil
}
