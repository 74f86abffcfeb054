package gateway

import "time"

// Policy is how storepay treats one bank: the knobs behind each bank's
// failsafe-go policies. The zero value of every field means its default
// (see [DefaultPolicy]); the defaults keep a whole card decision well
// inside the contract's 30 seconds.
type Policy struct {
	// AttemptTimeout cuts off one HTTP attempt, and a health probe.
	// Default 5s. An attempt after one that ran out of time or found the
	// bank busy with the same request gets three times as long (see
	// slowTimeout), within the call's own deadline.
	AttemptTimeout time.Duration
	// MaxAttempts bounds the attempts at one bank for one call, counting
	// same-key retries of an unknown outcome and URL failover. Default 4.
	MaxAttempts int
	// BackoffMin and BackoffMax bound the exponential backoff (with 25%
	// jitter) between attempts. Defaults 100ms and 2s.
	BackoffMin time.Duration
	BackoffMax time.Duration
	// The circuit breaker opens when at least BreakerFailureRate of the
	// calls in the last BreakerWindow failed, once BreakerMinCalls calls
	// were seen; it stays open BreakerDelay, then lets trial calls through
	// and closes after BreakerSuccesses successes. Defaults 0.5, 5, 10s,
	// 10s and 2.
	BreakerFailureRate float64
	BreakerMinCalls    uint
	BreakerWindow      time.Duration
	BreakerDelay       time.Duration
	BreakerSuccesses   uint
	// MaxConcurrent is the bulkhead: calls in flight at this bank at once;
	// a call beyond it goes to the next bank. Default 64.
	MaxConcurrent int
	// RatePerSecond caps new calls per second to this bank (0: no cap);
	// calls over the cap go to the next bank instead of queueing.
	RatePerSecond float64
	// ProbeInterval is how often the bank's /v1/health is probed, so that
	// an idle store notices an outage and a recovery; a failed attempt
	// also triggers a probe at once. Two failed probes in a row open the
	// breaker. Default 2s; negative switches probing off.
	ProbeInterval time.Duration
	// MaxRetryAfter caps how long a bank's 429 Retry-After keeps traffic
	// away from it. Default 60s.
	MaxRetryAfter time.Duration
}

// DefaultPolicy returns p with every zero field set to its default.
func DefaultPolicy(p Policy) Policy {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&p.AttemptTimeout, 5*time.Second)
	def(&p.BackoffMin, 100*time.Millisecond)
	def(&p.BackoffMax, 2*time.Second)
	def(&p.BreakerWindow, 10*time.Second)
	def(&p.BreakerDelay, 10*time.Second)
	def(&p.ProbeInterval, 2*time.Second)
	def(&p.MaxRetryAfter, 60*time.Second)
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 4
	}
	if p.BreakerFailureRate <= 0 || p.BreakerFailureRate > 1 {
		p.BreakerFailureRate = 0.5
	}
	if p.BreakerMinCalls == 0 {
		p.BreakerMinCalls = 5
	}
	if p.BreakerSuccesses == 0 {
		p.BreakerSuccesses = 2
	}
	if p.MaxConcurrent <= 0 {
		p.MaxConcurrent = 64
	}
	return p
}

// slowTimeout is the time an attempt gets once the bank has shown itself
// slow: three attempt timeouts (15 s by default, well inside a payment's
// 25 s budget).
func (p Policy) slowTimeout() time.Duration { return 3 * p.AttemptTimeout }
