package banksim

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Fault switches one kind of misbehaviour on. The zero Fault fires on
// every request.
type Fault struct {
	// Probability that the fault fires on a request, in (0, 1]. Zero
	// means always.
	Probability float64 `json:"probability,omitempty"`
	// Next, when positive, limits the fault to the next Next requests
	// that reach it (whether or not it fires on them); then it is spent.
	// Zero means until the faults are changed.
	Next int `json:"next,omitempty"`
}

// Latency delays every answer by Fixed plus a random duration up to
// Jitter. On a POST the delay comes after the idempotency key is taken, so
// a second request with the same key meanwhile gets 409
// idempotency_key_in_use. Lifting the fault releases the waiting requests.
type Latency struct {
	Fault
	Fixed  time.Duration
	Jitter time.Duration
	// AfterWork moves the delay of a new POST to after the work: the bank
	// has approved (and recorded the answer) but the answer is late. A
	// client that dies meanwhile left a charge it never heard of.
	AfterWork bool
}

// RateLimit answers 429 with a Retry-After header once more than
// PerSecond requests came in the same second of the simulator's clock.
// PerSecond 0 rate limits every request. GET /v1/health is never rate
// limited.
type RateLimit struct {
	Fault
	PerSecond int
	// RetryAfter is the Retry-After sent, rounded up to whole seconds.
	// Zero means the time left in the current second (at least 1s).
	RetryAfter time.Duration
}

// Faults is a set of faults that a listener (or every listener) shows.
// All combine; nil fields are off. The order a request meets them in:
// Blackhole, Unauthorized, RateLimit, NotProcessed, Error, then the work
// (delayed by Latency), then DropAfterApply.
type Faults struct {
	// Latency delays answers.
	Latency *Latency `json:"latency,omitempty"`
	// Error answers 500 internal_error without doing anything.
	Error *Fault `json:"error,omitempty"`
	// NotProcessed answers 503 not_processed without doing anything.
	NotProcessed *Fault `json:"not_processed,omitempty"`
	// RateLimit answers 429 over a request rate.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
	// Blackhole accepts the request and never answers, until the fault is
	// lifted (the request then carries on) or the client gives up.
	Blackhole *Fault `json:"blackhole,omitempty"`
	// DropAfterApply does the work and records its idempotent answer,
	// then closes the connection without answering (the client sees a
	// reset): the outcome-unknown case.
	DropAfterApply *Fault `json:"drop_after_apply,omitempty"`
	// ErrorAfterApply does the work of a new POST, then records 500
	// internal_error as the key's answer and sends it: a bank that keeps
	// its failure, so that every repeat under the key replays the 500
	// while its records (the lookup) show the work done.
	ErrorAfterApply *Fault `json:"error_after_apply,omitempty"`
	// Unauthorized answers 401 to everything.
	Unauthorized *Fault `json:"unauthorized,omitempty"`
	// Refuse closes the listening socket and every open connection, so
	// that new connections are refused; lifting it listens again on the
	// same port. It has no probability: a closed port refuses everyone.
	Refuse bool `json:"refuse,omitempty"`
}

// validate reports the first value out of range.
func (f Faults) validate() error {
	check := func(name string, ft *Fault) error {
		if ft == nil {
			return nil
		}
		if ft.Probability < 0 || ft.Probability > 1 {
			return fmt.Errorf("%s: probability %v not in [0, 1]", name, ft.Probability)
		}
		if ft.Next < 0 {
			return fmt.Errorf("%s: next %d is negative", name, ft.Next)
		}
		return nil
	}
	var errs []error
	if f.Latency != nil {
		errs = append(errs, check("latency", &f.Latency.Fault))
		if f.Latency.Fixed < 0 || f.Latency.Jitter < 0 {
			errs = append(errs, errors.New("latency: negative duration"))
		}
	}
	if f.RateLimit != nil {
		errs = append(errs, check("rate_limit", &f.RateLimit.Fault))
		if f.RateLimit.PerSecond < 0 || f.RateLimit.RetryAfter < 0 {
			errs = append(errs, errors.New("rate_limit: negative value"))
		}
	}
	errs = append(errs,
		check("error", f.Error),
		check("not_processed", f.NotProcessed),
		check("blackhole", f.Blackhole),
		check("drop_after_apply", f.DropAfterApply),
		check("error_after_apply", f.ErrorAfterApply),
		check("unauthorized", f.Unauthorized))
	return errors.Join(errs...)
}

// The JSON form of durations is a Go duration string ("250ms").

type latencyJSON struct {
	Fault
	Fixed     string `json:"fixed,omitempty"`
	Jitter    string `json:"jitter,omitempty"`
	AfterWork bool   `json:"after_work,omitempty"`
}

// MarshalJSON writes durations as strings such as "250ms".
func (l Latency) MarshalJSON() ([]byte, error) {
	return json.Marshal(latencyJSON{l.Fault, durationString(l.Fixed), durationString(l.Jitter), l.AfterWork})
}

// UnmarshalJSON reads durations as strings such as "250ms".
func (l *Latency) UnmarshalJSON(data []byte) error {
	var w latencyJSON
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	fixed, err := parseDuration(w.Fixed)
	if err != nil {
		return fmt.Errorf("latency fixed: %w", err)
	}
	jitter, err := parseDuration(w.Jitter)
	if err != nil {
		return fmt.Errorf("latency jitter: %w", err)
	}
	*l = Latency{Fault: w.Fault, Fixed: fixed, Jitter: jitter, AfterWork: w.AfterWork}
	return nil
}

type rateLimitJSON struct {
	Fault
	PerSecond  int    `json:"per_second"`
	RetryAfter string `json:"retry_after,omitempty"`
}

// MarshalJSON writes RetryAfter as a string such as "2s".
func (r RateLimit) MarshalJSON() ([]byte, error) {
	return json.Marshal(rateLimitJSON{r.Fault, r.PerSecond, durationString(r.RetryAfter)})
}

// UnmarshalJSON reads RetryAfter as a string such as "2s".
func (r *RateLimit) UnmarshalJSON(data []byte) error {
	var w rateLimitJSON
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	after, err := parseDuration(w.RetryAfter)
	if err != nil {
		return fmt.Errorf("rate_limit retry_after: %w", err)
	}
	*r = RateLimit{Fault: w.Fault, PerSecond: w.PerSecond, RetryAfter: after}
	return nil
}

func durationString(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

func parseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	return time.ParseDuration(s)
}

// The fault kinds a faultSet counts requests for.
const (
	kindLatency = iota
	kindError
	kindNotProcessed
	kindRateLimit
	kindBlackhole
	kindDropAfterApply
	kindErrorAfterApply
	kindUnauthorized
	numKinds
)

// faultSet is one installed Faults with its running state: what is left
// of each Next window and the rate limiter's current second. Guarded by
// Sim.faultsMu. Installing new faults replaces the whole set; requests
// held by a set's latency or blackhole wait only while it is installed.
type faultSet struct {
	spec   Faults
	left   [numKinds]int // -1: unlimited; 0: spent; n: the next n requests
	second time.Time     // rate limiter window
	count  int           // requests admitted in that window
}

func newFaultSet(f Faults) *faultSet {
	fs := &faultSet{spec: f}
	for k, ft := range fs.faults() {
		fs.left[k] = 0
		if ft != nil {
			fs.left[k] = -1
			if ft.Next > 0 {
				fs.left[k] = ft.Next
			}
		}
	}
	return fs
}

// faults lists each kind's Fault, nil when off.
func (fs *faultSet) faults() [numKinds]*Fault {
	var out [numKinds]*Fault
	if fs.spec.Latency != nil {
		out[kindLatency] = &fs.spec.Latency.Fault
	}
	if fs.spec.RateLimit != nil {
		out[kindRateLimit] = &fs.spec.RateLimit.Fault
	}
	out[kindError] = fs.spec.Error
	out[kindNotProcessed] = fs.spec.NotProcessed
	out[kindBlackhole] = fs.spec.Blackhole
	out[kindDropAfterApply] = fs.spec.DropAfterApply
	out[kindErrorAfterApply] = fs.spec.ErrorAfterApply
	out[kindUnauthorized] = fs.spec.Unauthorized
	return out
}

// take consumes one request of kind k's window and reports whether the
// fault applies to this request (before its probability).
func (fs *faultSet) take(k int) bool {
	switch {
	case fs.left[k] == 0:
		return false
	case fs.left[k] > 0:
		fs.left[k]--
	}
	return true
}

// fire is take plus the fault's probability.
func (fs *faultSet) fire(k int) bool {
	if !fs.take(k) {
		return false
	}
	return chance(fs.faults()[k].Probability)
}

func chance(p float64) bool {
	return p <= 0 || p >= 1 || rand.Float64() < p
}

// decision is what the installed faults do to one request, decided when
// it arrives.
type decision struct {
	blackhole    []*faultSet // sets whose blackhole holds the request
	unauthorized bool
	rateLimited  bool
	retryAfter   time.Duration
	notProcessed bool
	serverError  bool
	delay        time.Duration
	afterWork    bool        // delay a new POST's answer, not its work
	latency      []*faultSet // sets the delay comes from
	drop         bool
	failAfter    bool // ErrorAfterApply
}

// decide applies fs to a request arriving at now. Caller holds faultsMu.
func (fs *faultSet) decide(d *decision, now time.Time, health bool) {
	if fs.fire(kindBlackhole) {
		d.blackhole = append(d.blackhole, fs)
	}
	if fs.fire(kindUnauthorized) {
		d.unauthorized = true
	}
	if rl := fs.spec.RateLimit; rl != nil && !health && fs.take(kindRateLimit) {
		second := now.Truncate(time.Second)
		if !second.Equal(fs.second) {
			fs.second, fs.count = second, 0
		}
		if fs.count >= rl.PerSecond && chance(rl.Probability) {
			d.rateLimited = true
			d.retryAfter = rl.RetryAfter
			if d.retryAfter <= 0 {
				d.retryAfter = second.Add(time.Second).Sub(now)
			}
		} else {
			fs.count++
		}
	}
	if fs.fire(kindNotProcessed) {
		d.notProcessed = true
	}
	if fs.fire(kindError) {
		d.serverError = true
	}
	if fs.fire(kindLatency) {
		l := fs.spec.Latency
		d.delay += l.Fixed
		if l.Jitter > 0 {
			d.delay += rand.N(l.Jitter)
		}
		d.afterWork = d.afterWork || l.AfterWork
		d.latency = append(d.latency, fs)
	}
	if fs.fire(kindDropAfterApply) {
		d.drop = true
	}
	if fs.fire(kindErrorAfterApply) {
		d.failAfter = true
	}
}
