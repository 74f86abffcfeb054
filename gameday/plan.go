package gameday

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"
)

// Plan is a game day: the store's hours, the workload's shape and mix,
// and the incidents. Times of day are "HH:MM" in plan time.
type Plan struct {
	Name  string  `json:"name"`
	Open  string  `json:"open"`  // first customer, "08:00"
	Close string  `json:"close"` // last customer, "20:00"
	Speed float64 `json:"speed"` // plan seconds per real second
	Seed  int64   `json:"seed"`
	// CustomersPerHour is the base arrival rate; Peaks multiply it.
	CustomersPerHour float64 `json:"customers_per_hour"`
	Peaks            []Peak  `json:"peaks,omitempty"`
	Mix              Mix     `json:"mix"`
	// MaxPayments bounds the run: no customer arrives after it.
	MaxPayments int        `json:"max_payments"`
	Incidents   []Incident `json:"incidents,omitempty"`
	// DrainTimeout bounds the wait for the queue to drain after closing
	// (real time). Default 60s.
	DrainTimeout Duration `json:"drain_timeout,omitzero"`
}

// Peak multiplies the arrival rate between From and To (a rush above 1,
// quiet hours below).
type Peak struct {
	Name   string  `json:"name,omitempty"`
	From   string  `json:"from"`
	To     string  `json:"to"`
	Factor float64 `json:"factor"`
}

// Mix gives the share of customers doing each thing; the rest pay by
// card in one go.
type Mix struct {
	Cash    float64 `json:"cash"`    // pay cash
	Split   float64 `json:"split"`   // part cash, part card
	Tip     float64 `json:"tip"`     // a card payment with a tip
	PreAuth float64 `json:"preauth"` // authorize, then capture
	Refund  float64 `json:"refund"`  // a card payment refunded later
	Cancel  float64 `json:"cancel"`  // an order cancelled after a card payment
	Repeat  float64 `json:"repeat"`  // the terminal lost the answer and repeats the request
}

// Incident kinds.
const (
	BankDown      = "bank_down"      // the bank refuses connections
	BankSlow      = "bank_slow"      // the bank answers after Latency
	LostResponses = "lost_responses" // the bank applies, then drops the answer (Probability)
	AllBanksDown  = "all_banks_down" // every bank refuses connections
	Crash         = "crash"          // storepay is SIGKILLed, restarted after For
	EStop         = "estop"          // a manager stops forwarding for For
	DiskFull      = "disk_full"      // storepay's files may grow 64 KiB more (Linux: RLIMIT_FSIZE)
)

// Incident is one fault at a set time, lifted after For.
type Incident struct {
	At          string   `json:"at"`
	For         Duration `json:"for"` // plan time
	Kind        string   `json:"kind"`
	Bank        string   `json:"bank,omitempty"` // primary or secondary
	Latency     Duration `json:"latency,omitzero"`
	Probability float64  `json:"probability,omitzero"`
}

// Duration is a time.Duration written as "30m" in JSON.
type Duration struct{ time.Duration }

// UnmarshalJSON reads "30m".
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string like \"30m\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes "30m0s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// Load reads and checks a plan.
func Load(path string) (Plan, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Plan{}, fmt.Errorf("plan: %w", err)
	}
	var p Plan
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return Plan{}, fmt.Errorf("plan %s: %w", path, err)
	}
	if err := p.Check(); err != nil {
		return Plan{}, fmt.Errorf("plan %s: %w", path, err)
	}
	return p, nil
}

// maxRealDay bounds a game day's workload in real time.
const maxRealDay = 30 * time.Minute

// Check reports the first thing wrong with the plan.
func (p *Plan) Check() error {
	open, err := clock(p.Open)
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	closeAt, err := clock(p.Close)
	if err != nil {
		return fmt.Errorf("close: %w", err)
	}
	if closeAt <= open {
		return errors.New("close must be after open")
	}
	if p.Speed <= 0 {
		return errors.New("speed must be positive (plan seconds per real second)")
	}
	if real := time.Duration(float64(closeAt-open) / p.Speed); real > maxRealDay {
		return fmt.Errorf("the day lasts %s in real time at speed %v: at most %s", real, p.Speed, maxRealDay)
	}
	if p.CustomersPerHour <= 0 {
		return errors.New("customers_per_hour must be positive")
	}
	if p.MaxPayments <= 0 || p.MaxPayments > 20000 {
		return errors.New("max_payments must be between 1 and 20000")
	}
	for i, pk := range p.Peaks {
		f, err1 := clock(pk.From)
		t, err2 := clock(pk.To)
		if err := errors.Join(err1, err2); err != nil || t <= f || pk.Factor < 0 {
			return fmt.Errorf("peaks[%d]: from before to, HH:MM, factor >= 0", i)
		}
	}
	m := p.Mix
	for _, v := range []float64{m.Cash, m.Split, m.Tip, m.PreAuth, m.Refund, m.Cancel, m.Repeat} {
		if v < 0 || v > 1 {
			return errors.New("mix: every share is between 0 and 1")
		}
	}
	if m.Cash+m.Split+m.PreAuth > 1 {
		return errors.New("mix: cash + split + preauth exceed 1")
	}
	for i, in := range p.Incidents {
		at, err := clock(in.At)
		if err != nil {
			return fmt.Errorf("incidents[%d].at: %w", i, err)
		}
		if at < open || at >= closeAt {
			return fmt.Errorf("incidents[%d].at %s: not within opening hours", i, in.At)
		}
		switch in.Kind {
		case BankDown, BankSlow, LostResponses:
			if in.Bank != "primary" && in.Bank != "secondary" {
				return fmt.Errorf("incidents[%d]: bank must be primary or secondary", i)
			}
		case AllBanksDown, Crash, EStop, DiskFull:
		default:
			return fmt.Errorf("incidents[%d]: unknown kind %q", i, in.Kind)
		}
		if in.For.Duration <= 0 {
			return fmt.Errorf("incidents[%d]: for must be positive", i)
		}
		if in.Kind == BankSlow && in.Latency.Duration <= 0 {
			return fmt.Errorf("incidents[%d]: bank_slow needs latency", i)
		}
		if in.Kind == LostResponses && (in.Probability <= 0 || in.Probability > 1) {
			return fmt.Errorf("incidents[%d]: lost_responses needs a probability in (0, 1]", i)
		}
	}
	if p.DrainTimeout.Duration <= 0 {
		p.DrainTimeout.Duration = 60 * time.Second
	}
	return nil
}

// clock reads "HH:MM" as the time since midnight.
func clock(s string) (time.Duration, error) {
	t, err := time.Parse("15:04", s)
	if err != nil {
		return 0, fmt.Errorf("%q is not HH:MM", s)
	}
	return time.Duration(t.Hour())*time.Hour + time.Duration(t.Minute())*time.Minute, nil
}
