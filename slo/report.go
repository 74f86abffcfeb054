package slo

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"sort"
	"time"

	_ "modernc.org/sqlite" // the driver OpenReadOnly opens

	"storepay/migrations"
)

// Defaults of Options: the contract's promise of a card decision within
// 30 s, the store's definition (nobody kept waiting over a minute), and
// the payment subsystem's 99.999%.
const (
	DefaultBudget         = 30 * time.Second
	DefaultMaxWait        = time.Minute
	DefaultObjective      = 0.99999
	DefaultStoreObjective = 0.9999
)

// Options says which window to report on and against what.
type Options struct {
	From, To time.Time
	// Banks are the configured banks in priority order; all of them out
	// at once is the all-banks outage. Banks seen only in the records are
	// added after them.
	Banks          []string
	Budget         time.Duration // a card payment's decision budget
	MaxWait        time.Duration // the longest a customer may wait
	Objective      float64       // payment availability objective
	StoreObjective float64       // store availability objective
}

func (o *Options) defaults() {
	if o.Budget <= 0 {
		o.Budget = DefaultBudget
	}
	if o.MaxWait <= 0 {
		o.MaxWait = DefaultMaxWait
	}
	if o.Objective <= 0 {
		o.Objective = DefaultObjective
	}
	if o.StoreObjective <= 0 {
		o.StoreObjective = DefaultStoreObjective
	}
}

// Report is the service level of one window. Times are UTC; a ratio is a
// fraction (1 = 100%).
type Report struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`

	Store    StoreLevel   `json:"store"`
	Payments PaymentLevel `json:"payments"`
	Budget   ErrorBudget  `json:"error_budget"`

	// OfflineOnlySeconds is the time no bank admitted payments.
	OfflineOnlySeconds float64    `json:"offline_only_seconds"`
	Incidents          []Incident `json:"incidents"`
	// Held: every objective held.
	Held bool `json:"held"`
}

// StoreLevel is store availability: the share of the window in which
// storepay was running and no payment kept a customer waiting longer
// than MaxWait.
type StoreLevel struct {
	Availability  float64 `json:"availability"`
	Objective     float64 `json:"objective"`
	DownSeconds   float64 `json:"down_seconds"`
	WindowSeconds float64 `json:"window_seconds"`
	Held          bool    `json:"held"`
}

// PaymentLevel is payment availability: card payments decided (approved,
// declined or accepted offline) within their budget, over all card
// payments started in the window.
type PaymentLevel struct {
	Card           int            `json:"card"`
	Cash           int            `json:"cash"`
	DecidedInTime  int            `json:"decided_in_budget"`
	Late           int            `json:"late"`      // decided, after the budget
	Undecided      int            `json:"undecided"` // no decision by the window's end
	Online         int            `json:"online"`    // decided online
	Offline        int            `json:"offline"`   // decided offline (store-and-forward)
	OnlineShare    float64        `json:"online_share"`
	OfflineShare   float64        `json:"offline_share"`
	Availability   float64        `json:"availability"`
	Objective      float64        `json:"objective"`
	BudgetSeconds  float64        `json:"budget_seconds"`
	ByStatus       map[string]int `json:"by_status"`
	Held           bool           `json:"held"`
	MaxWaitSeconds float64        `json:"max_wait_seconds"` // the longest card decision
}

// ErrorBudget compares the bad card payments with what the objective
// allows in this window. Left is the share of the budget not spent
// (negative when overspent); BurnRate is the bad share over the allowed
// share (1 spends the budget exactly by the window's end).
type ErrorBudget struct {
	Allowed  float64 `json:"allowed"`
	Spent    int     `json:"spent"`
	Left     float64 `json:"left"`
	BurnRate float64 `json:"burn_rate"`
}

// Incident kinds.
const (
	BankOutage     = "bank_outage"
	AllBanksOutage = "all_banks_outage"
	EStop          = "estop"
	Crash          = "crash"
)

// Incident is one outage with its effect on the card payments started
// during it.
type Incident struct {
	Kind    string    `json:"kind"`
	Bank    string    `json:"bank,omitempty"`
	State   string    `json:"state,omitempty"` // estop: pause or stop
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Ongoing bool      `json:"ongoing"` // still on at the window's end (End is the window's end)
	Seconds float64   `json:"seconds"`
	Effect  Effect    `json:"effect"`
}

// Effect counts the card payments started during an incident.
type Effect struct {
	Card    int `json:"card"`
	Online  int `json:"online"`
	Offline int `json:"offline"`
	Bad     int `json:"bad"` // late or undecided
}

// OpenReadOnly opens a storepay database for reading only: no migration,
// no lock, no write, so the report runs beside a serving store.
func OpenReadOnly(path string) (*sql.DB, error) {
	u := url.URL{Scheme: "file", Opaque: path, RawQuery: "mode=ro&_pragma=busy_timeout(5000)"}
	db, err := sql.Open("sqlite", u.String())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	var n int
	if err := db.QueryRow(`SELECT count(*) FROM availability_events`).Scan(&n); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: not a storepay database at schema 32 or later: %w", path, err)
	}
	return db, nil
}

type interval struct{ start, end time.Time }

type payment struct {
	method, mode, status string
	created, decided     time.Time // decided zero: none yet
}

// Compute reads the window's records from db and computes the report.
func Compute(ctx context.Context, db *sql.DB, opts Options) (Report, error) {
	opts.defaults()
	if !opts.To.After(opts.From) {
		return Report{}, fmt.Errorf("slo: the window's end %s is not after its start %s", opts.To.Format(time.RFC3339), opts.From.Format(time.RFC3339))
	}
	from, to := opts.From.UTC(), opts.To.UTC()
	rep := Report{From: from, To: to, Incidents: []Incident{}}

	pays, err := loadPayments(ctx, db, from, to)
	if err != nil {
		return Report{}, err
	}
	gw, storepay, err := loadEvents(ctx, db, to)
	if err != nil {
		return Report{}, err
	}
	estops, err := loadEStops(ctx, db, from, to)
	if err != nil {
		return Report{}, err
	}

	// Payments.
	pl := PaymentLevel{Objective: opts.Objective, BudgetSeconds: opts.Budget.Seconds(), ByStatus: map[string]int{}}
	var waits []interval
	for _, p := range pays {
		end := p.decided
		if end.IsZero() || end.After(to) {
			end = to
		}
		if end.Sub(p.created) > opts.MaxWait {
			waits = append(waits, interval{p.created.Add(opts.MaxWait), end})
		}
		if p.method != "card" {
			pl.Cash++
			continue
		}
		pl.Card++
		pl.ByStatus[p.status]++
		switch {
		case p.decided.IsZero() || p.decided.After(to):
			pl.Undecided++
		case p.decided.Sub(p.created) > opts.Budget:
			pl.Late++
		default:
			pl.DecidedInTime++
		}
		if !p.decided.IsZero() && !p.decided.After(to) {
			if p.mode == "offline" {
				pl.Offline++
			} else {
				pl.Online++
			}
			pl.MaxWaitSeconds = max(pl.MaxWaitSeconds, p.decided.Sub(p.created).Seconds())
		}
	}
	pl.Availability = ratio(pl.DecidedInTime, pl.Card)
	if d := pl.Online + pl.Offline; d > 0 {
		pl.OnlineShare, pl.OfflineShare = float64(pl.Online)/float64(d), float64(pl.Offline)/float64(d)
	}
	pl.Held = pl.Availability >= opts.Objective
	rep.Payments = pl

	bad := pl.Card - pl.DecidedInTime
	eb := ErrorBudget{Allowed: (1 - opts.Objective) * float64(pl.Card), Spent: bad, Left: 1}
	if pl.Card > 0 {
		eb.BurnRate = (float64(bad) / float64(pl.Card)) / (1 - opts.Objective)
		eb.Left = 1 - float64(bad)/eb.Allowed
	}
	rep.Budget = eb

	// Incidents: bank outages and their intersection.
	banks := append([]string{}, opts.Banks...)
	for name := range gw {
		if !contains(banks, name) {
			banks = append(banks, name)
		}
	}
	sort.SliceStable(banks[len(opts.Banks):], func(i, j int) bool {
		return banks[len(opts.Banks)+i] < banks[len(opts.Banks)+j]
	})
	var all []interval
	for i, name := range banks {
		outs := outages(gw[name], from, to)
		for _, o := range outs {
			rep.Incidents = append(rep.Incidents, newIncident(BankOutage, name, "", o, to, pays, opts))
		}
		if i == 0 {
			all = outs
		} else {
			all = intersect(all, outs)
		}
	}
	if len(banks) == 0 {
		all = nil
	}
	for _, o := range all {
		rep.Incidents = append(rep.Incidents, newIncident(AllBanksOutage, "", "", o, to, pays, opts))
		rep.OfflineOnlySeconds += o.end.Sub(o.start).Seconds()
	}
	for _, e := range estops {
		rep.Incidents = append(rep.Incidents, newIncident(EStop, "", e.state, e.interval, to, pays, opts))
	}
	crashes := crashGaps(storepay, from, to)
	for _, c := range crashes {
		rep.Incidents = append(rep.Incidents, newIncident(Crash, "", "", c, to, pays, opts))
	}
	sort.SliceStable(rep.Incidents, func(i, j int) bool { return rep.Incidents[i].Start.Before(rep.Incidents[j].Start) })

	// Store availability.
	down := union(append(crashes, waits...))
	st := StoreLevel{Objective: opts.StoreObjective, WindowSeconds: to.Sub(from).Seconds()}
	for _, d := range down {
		st.DownSeconds += d.end.Sub(d.start).Seconds()
	}
	st.Availability = 1 - st.DownSeconds/st.WindowSeconds
	st.Held = st.Availability >= opts.StoreObjective
	rep.Store = st
	rep.Held = st.Held && pl.Held
	return rep, nil
}

func ratio(n, d int) float64 {
	if d == 0 {
		return 1
	}
	return float64(n) / float64(d)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func newIncident(kind, bank, state string, iv interval, to time.Time, pays []payment, opts Options) Incident {
	in := Incident{Kind: kind, Bank: bank, State: state, Start: iv.start, End: iv.end, Ongoing: !iv.end.Before(to),
		Seconds: iv.end.Sub(iv.start).Seconds()}
	for _, p := range pays {
		if p.method != "card" || p.created.Before(iv.start) || !p.created.Before(iv.end) {
			continue
		}
		in.Effect.Card++
		decided := !p.decided.IsZero() && !p.decided.After(to)
		switch {
		case decided && p.mode == "offline":
			in.Effect.Offline++
		case decided:
			in.Effect.Online++
		}
		if !decided || p.decided.Sub(p.created) > opts.Budget {
			in.Effect.Bad++
		}
	}
	return in
}

// loadPayments reads the payments started in [from, to) with the moment
// each was first decided: its first move out of pending.
func loadPayments(ctx context.Context, db *sql.DB, from, to time.Time) ([]payment, error) {
	rows, err := db.QueryContext(ctx, `
		SELECT p.method, p.mode, p.status, p.created_at,
		       coalesce((SELECT min(e.at) FROM payment_events e WHERE e.payment_id = p.id AND e.to_status <> 'pending'),
		                CASE WHEN p.status <> 'pending' THEN p.updated_at ELSE '' END)
		FROM payments p WHERE p.created_at >= ? AND p.created_at < ? ORDER BY p.created_at, p.id`,
		migrations.FormatTime(from), migrations.FormatTime(to))
	if err != nil {
		return nil, fmt.Errorf("slo: read payments: %w", err)
	}
	defer rows.Close()
	var out []payment
	for rows.Next() {
		var p payment
		var created, decided string
		if err := rows.Scan(&p.method, &p.mode, &p.status, &created, &decided); err != nil {
			return nil, fmt.Errorf("slo: read payments: %w", err)
		}
		if p.created, err = migrations.ParseTime(created); err != nil {
			return nil, fmt.Errorf("slo: payment created_at %q: %w", created, err)
		}
		if p.decided, err = migrations.ParseTime(decided); err != nil {
			return nil, fmt.Errorf("slo: payment decided at %q: %w", decided, err)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

type stateAt struct {
	at    time.Time
	state string
}

// loadEvents reads the availability events up to to: each bank's breaker
// states and storepay's own starts, stops and crashes, in order.
func loadEvents(ctx context.Context, db *sql.DB, to time.Time) (map[string][]stateAt, []stateAt, error) {
	rows, err := db.QueryContext(ctx, `SELECT at, source, name, state FROM availability_events WHERE at < ? ORDER BY at, seq`,
		migrations.FormatTime(to))
	if err != nil {
		return nil, nil, fmt.Errorf("slo: read availability events: %w", err)
	}
	defer rows.Close()
	gw := map[string][]stateAt{}
	var sp []stateAt
	for rows.Next() {
		var at, source, name, state string
		if err := rows.Scan(&at, &source, &name, &state); err != nil {
			return nil, nil, fmt.Errorf("slo: read availability events: %w", err)
		}
		t, err := migrations.ParseTime(at)
		if err != nil {
			return nil, nil, fmt.Errorf("slo: availability event at %q: %w", at, err)
		}
		if source == "gateway" {
			gw[name] = append(gw[name], stateAt{t, state})
		} else {
			sp = append(sp, stateAt{t, state})
		}
	}
	return gw, sp, rows.Err()
}

// outages turns a bank's breaker states into the intervals, clipped to
// the window, in which it was not closed: it opens at the first open and
// is back at the next closed (a half-open breaker is still out: it
// admits only trials).
func outages(states []stateAt, from, to time.Time) []interval {
	var out []interval
	var start time.Time
	down := false
	for _, s := range states {
		switch {
		case !down && s.state != "closed":
			down, start = true, s.at
		case down && s.state == "closed":
			down = false
			out = appendClipped(out, interval{start, s.at}, from, to)
		}
	}
	if down {
		out = appendClipped(out, interval{start, to}, from, to)
	}
	return out
}

// crashGaps are the times storepay was down after a crash: from the last
// moment it was seen alive to the next start.
func crashGaps(states []stateAt, from, to time.Time) []interval {
	var out []interval
	for i, s := range states {
		if s.state != "crash" {
			continue
		}
		end := to
		for _, n := range states[i+1:] {
			if n.state == "start" {
				end = n.at
				break
			}
		}
		out = appendClipped(out, interval{s.at, end}, from, to)
	}
	return out
}

func appendClipped(out []interval, iv interval, from, to time.Time) []interval {
	if iv.start.Before(from) {
		iv.start = from
	}
	if iv.end.After(to) {
		iv.end = to
	}
	if !iv.end.After(iv.start) {
		return out
	}
	return append(out, iv)
}

func intersect(a, b []interval) []interval {
	var out []interval
	for _, x := range a {
		for _, y := range b {
			s, e := x.start, x.end
			if y.start.After(s) {
				s = y.start
			}
			if y.end.Before(e) {
				e = y.end
			}
			if e.After(s) {
				out = append(out, interval{s, e})
			}
		}
	}
	return out
}

func union(in []interval) []interval {
	sort.Slice(in, func(i, j int) bool { return in[i].start.Before(in[j].start) })
	var out []interval
	for _, iv := range in {
		if n := len(out); n > 0 && !iv.start.After(out[n-1].end) {
			if iv.end.After(out[n-1].end) {
				out[n-1].end = iv.end
			}
			continue
		}
		out = append(out, iv)
	}
	return out
}

type estopSpan struct {
	interval
	state string
}

// loadEStops reads the emergency stop's changes from the audit log: each
// pause or stop lasts until the next change.
func loadEStops(ctx context.Context, db *sql.DB, from, to time.Time) ([]estopSpan, error) {
	rows, err := db.QueryContext(ctx, `SELECT at, action FROM audit_log WHERE action IN ('estop.go', 'estop.pause', 'estop.stop') AND at < ? ORDER BY at, seq`,
		migrations.FormatTime(to))
	if err != nil {
		return nil, fmt.Errorf("slo: read emergency stops: %w", err)
	}
	defer rows.Close()
	var out []estopSpan
	var cur *estopSpan
	for rows.Next() {
		var at, action string
		if err := rows.Scan(&at, &action); err != nil {
			return nil, fmt.Errorf("slo: read emergency stops: %w", err)
		}
		t, err := migrations.ParseTime(at)
		if err != nil {
			return nil, fmt.Errorf("slo: audit at %q: %w", at, err)
		}
		state := action[len("estop."):]
		if cur != nil {
			if state == cur.state {
				continue
			}
			cur.end = t
			if iv := appendClipped(nil, cur.interval, from, to); len(iv) == 1 {
				out = append(out, estopSpan{iv[0], cur.state})
			}
			cur = nil
		}
		if state != "go" {
			cur = &estopSpan{interval{start: t}, state}
		}
	}
	if cur != nil {
		cur.end = to
		if iv := appendClipped(nil, cur.interval, from, to); len(iv) == 1 {
			out = append(out, estopSpan{iv[0], cur.state})
		}
	}
	return out, rows.Err()
}
