package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"storepay/gateway"
	"storepay/hq"
	"storepay/orders"
	"storepay/saf"
	"storepay/web"
)

// Config is storepay's configuration file (JSON). The contract's keys
// come first; the rest are storepay's own, all optional with safe
// defaults (see the README).
type Config struct {
	StoreID    string          `json:"store_id"`
	Listen     string          `json:"listen"`
	Database   string          `json:"database"`
	CardKeyEnv string          `json:"card_key_env"`
	Gateways   []GatewayConfig `json:"gateways"`
	Offline    OfflineConfig   `json:"offline"`

	// Forwarding tunes the store-and-forward forwarder.
	Forwarding ForwardingConfig `json:"forwarding,omitzero"`
	// LogLevel is debug, info (default), warn or error.
	LogLevel string `json:"log_level,omitzero"`
	// ShutdownTimeout bounds the drain of in-flight requests on SIGTERM.
	ShutdownTimeout Duration `json:"shutdown_timeout,omitzero"`
	// ResolveInterval is how often payments with an unresolved bank call
	// are retried. Default 5s.
	ResolveInterval Duration `json:"resolve_interval,omitzero"`
	// PaymentBudget bounds a card payment's online decision (the contract
	// promises a decision within 30s). Default 25s.
	PaymentBudget Duration `json:"payment_budget,omitzero"`
	// UndoPolicy is who may void, refund or cancel a sale: own_terminal
	// (default: the terminal that took it, or a manager's token) or
	// any_terminal.
	UndoPolicy string `json:"undo_policy,omitzero"`
	// HQ links the store to headquarters (contract hq.md). Absent: no
	// outbox, no NATS, storepay as without headquarters.
	HQ *HQConfig `json:"hq,omitempty"`
}

// HQConfig is the store's hq block (contract hq.md); the last two keys
// are storepay's own bounds on the local stream (docs/hq.md).
type HQConfig struct {
	URLs           []string `json:"urls"`
	CredentialsEnv string   `json:"credentials_env"`
	DataDir        string   `json:"data_dir"`
	// Retention bounds how long events wait for headquarters. Default 60 days.
	Retention Duration `json:"retention,omitzero"`
	// MaxBytes bounds the disk the waiting events take. Default 2 GiB.
	MaxBytes int64 `json:"max_bytes,omitzero"`
}

// GatewayConfig is one bank, in priority order.
type GatewayConfig struct {
	Name       string   `json:"name"`
	Protocol   string   `json:"protocol"`
	URLs       []string `json:"urls"`
	MerchantID string   `json:"merchant_id"`
	APIKeyEnv  string   `json:"api_key_env"`
	// TerminalID is an iso8583 gateway's field 41: 1 to 8 printable
	// characters. acquirer-json gateways have none.
	TerminalID string `json:"terminal_id,omitempty"`

	AttemptTimeout     Duration `json:"attempt_timeout,omitzero"`
	MaxAttempts        int      `json:"max_attempts,omitzero"`
	BackoffMin         Duration `json:"backoff_min,omitzero"`
	BackoffMax         Duration `json:"backoff_max,omitzero"`
	BreakerFailureRate float64  `json:"breaker_failure_rate,omitzero"`
	BreakerMinCalls    int      `json:"breaker_min_calls,omitzero"`
	BreakerWindow      Duration `json:"breaker_window,omitzero"`
	BreakerDelay       Duration `json:"breaker_delay,omitzero"`
	BreakerSuccesses   int      `json:"breaker_successes,omitzero"`
	MaxConcurrent      int      `json:"max_concurrent,omitzero"`
	RatePerSecond      float64  `json:"rate_per_second,omitzero"`
	ProbeInterval      Duration `json:"probe_interval,omitzero"`
	MaxRetryAfter      Duration `json:"max_retry_after,omitzero"`
}

// OfflineConfig are the store-and-forward rules.
type OfflineConfig struct {
	FloorLimit int64    `json:"floor_limit"`
	TotalLimit int64    `json:"total_limit"`
	MaxAge     Duration `json:"max_age"`

	// Per card, over VelocityWindow (default 24h): at most VelocityCount
	// offline payments and VelocityAmount waiting at once. Unset (0): no
	// per-card limit, only the contract's floor and total limits.
	VelocityCount  int      `json:"velocity_count,omitzero"`
	VelocityAmount int64    `json:"velocity_amount,omitzero"`
	VelocityWindow Duration `json:"velocity_window,omitzero"`
	// HotCards are refused offline, written as first six and last four
	// digits with the middle masked: "400000******9979".
	HotCards []string `json:"hot_cards,omitempty"`
	// Currency is the ISO 4217 currency the amount limits are written in
	// (floor_limit, total_limit, velocity_amount, forwarding's
	// guard_max_amount), so that the console and the audit log show them
	// as money. It changes no rule (see saf.Rules.Currency). Unset: they
	// are shown as numbers of minor units.
	Currency string `json:"currency,omitempty"`
}

// ForwardingConfig are the forwarder's knobs (see saf.ForwardPolicy).
type ForwardingConfig struct {
	Concurrency    int      `json:"concurrency,omitzero"`
	RatePerSecond  float64  `json:"rate_per_second,omitzero"`
	MaxAttempts    int      `json:"max_attempts,omitzero"`
	BackoffMin     Duration `json:"backoff_min,omitzero"`
	BackoffMax     Duration `json:"backoff_max,omitzero"`
	Interval       Duration `json:"interval,omitzero"`
	CallTimeout    Duration `json:"call_timeout,omitzero"`
	GuardWindow    Duration `json:"guard_window,omitzero"`
	GuardMaxErrors int      `json:"guard_max_errors,omitzero"`
	GuardMaxAmount int64    `json:"guard_max_amount,omitzero"`
}

// Duration is a time.Duration written as a Go duration string ("72h").
type Duration struct{ time.Duration }

// UnmarshalJSON reads "1m30s"-style strings.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		// A type error: the decoder fills in the key's path.
		return &json.UnmarshalTypeError{Value: "non-string " + string(b), Type: reflect.TypeFor[Duration]()}
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		// A type error gets the key's path filled in by the decoder.
		return &json.UnmarshalTypeError{Value: "string " + strconv.Quote(s), Type: reflect.TypeFor[Duration]()}
	}
	d.Duration = v
	return nil
}

// MarshalJSON writes the duration string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// Defaults for keys the file may leave out.
const (
	defaultCardKeyEnv = "STOREPAY_CARD_KEY"
	defaultFloorLimit = 10000
	defaultTotalLimit = 500000
	defaultMaxAge     = 72 * time.Hour
)

// LoadConfig reads and validates a config file. Its errors name the key.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return ParseConfig(b)
}

// ParseConfig parses and validates a config file's bytes.
func ParseConfig(b []byte) (Config, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return Config{}, fmt.Errorf("config: not a JSON object: %w", err)
	}
	for _, key := range []string{"store_id", "listen", "database", "gateways"} {
		if _, ok := raw[key]; !ok {
			return Config{}, fmt.Errorf("config: %s: required key is missing", key)
		}
	}
	// Defaults first: decoding leaves keys the file omits untouched.
	c := Config{CardKeyEnv: defaultCardKeyEnv,
		Offline: OfflineConfig{FloorLimit: defaultFloorLimit, TotalLimit: defaultTotalLimit, MaxAge: Duration{defaultMaxAge}}}
	// Unknown keys first, by their path (offline.extra, gateways[1].foo):
	// the decoder names only the key.
	var uk *web.UnknownKeyError
	if err := web.ExactKeys(b, &c); errors.As(err, &uk) {
		return Config{}, fmt.Errorf("config: %s: unknown key (keys are case-sensitive)", uk.Path)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, configDecodeError(err)
	}
	if err := c.validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func configDecodeError(err error) error {
	var typeErr *json.UnmarshalTypeError
	if errors.As(err, &typeErr) {
		want := typeErr.Type.String()
		if typeErr.Type == reflect.TypeFor[Duration]() {
			want = `a duration such as "30s" or "72h"`
		}
		return fmt.Errorf("config: %s: must be %s", typeErr.Field, want)
	}
	if msg, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return fmt.Errorf("config: %s: unknown key", strings.Trim(msg, `"`))
	}
	// A Duration's own error: json wraps it without the field in older
	// forms, so say which keys take durations.
	return fmt.Errorf("config: %w", err)
}

// validate checks the whole config, section by section, and names the
// first bad key.
func (c *Config) validate() error {
	if err := c.validateTop(); err != nil {
		return err
	}
	names := map[string]bool{}
	for i, g := range c.Gateways {
		at := fmt.Sprintf("gateways[%d]", i)
		if names[g.Name] && strings.TrimSpace(g.Name) != "" {
			return fmt.Errorf("config: %s.name: %q is used twice", at, g.Name)
		}
		if err := g.validate(at); err != nil {
			return err
		}
		names[g.Name] = true
	}
	if err := c.Offline.validate(); err != nil {
		return err
	}
	if err := c.Forwarding.validate(); err != nil {
		return err
	}
	for i, h := range c.Offline.HotCards {
		if !saf.ValidHotCard(h) {
			return fmt.Errorf("config: offline.hot_cards[%d]: write the first six and last four digits with the middle masked, like 400000******9979", i)
		}
	}
	if !web.UndoPolicy(c.UndoPolicy).Valid() {
		return fmt.Errorf("config: undo_policy: %q is not own_terminal or any_terminal", c.UndoPolicy)
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("config: log_level: %q is not debug, info, warn or error", c.LogLevel)
	}
	return nil
}

// validateTop checks the keys every store must set.
func (c *Config) validateTop() error {
	if strings.TrimSpace(c.StoreID) == "" {
		return errors.New("config: store_id: must not be empty")
	}
	if err := validListen(c.Listen); err != nil {
		return fmt.Errorf("config: listen: %q %w", c.Listen, err)
	}
	if strings.TrimSpace(c.Database) == "" {
		return errors.New("config: database: must not be empty")
	}
	if err := c.HQ.validate(c.StoreID); err != nil {
		return err
	}
	if strings.TrimSpace(c.CardKeyEnv) == "" {
		return errors.New("config: card_key_env: must name an environment variable")
	}
	if len(c.Gateways) == 0 {
		return errors.New("config: gateways: at least one gateway is required")
	}
	return nil
}

// validate checks one gateway entry, at its place in the list (at), apart
// from its name being unique, which only the list can tell.
func (g GatewayConfig) validate(at string) error {
	switch {
	case strings.TrimSpace(g.Name) == "":
		return fmt.Errorf("config: %s.name: must not be empty", at)
	case g.Protocol != protocolJSON && g.Protocol != protocolISO:
		return fmt.Errorf("config: %s.protocol: %q is not supported (use \"acquirer-json\" or \"iso8583\")", at, g.Protocol)
	case len(g.URLs) == 0:
		return fmt.Errorf("config: %s.urls: at least one URL is required", at)
	case strings.TrimSpace(g.MerchantID) == "":
		return fmt.Errorf("config: %s.merchant_id: must not be empty", at)
	}
	if err := g.validateProtocolKeys(at); err != nil {
		return err
	}
	if g.BreakerFailureRate < 0 || g.BreakerFailureRate > 1 {
		return fmt.Errorf("config: %s.breaker_failure_rate: must be between 0 and 1", at)
	}
	if err := g.validatePolicy(at); err != nil {
		return err
	}
	return g.validateURLs(at)
}

// validateProtocolKeys checks the keys that depend on the protocol: an
// API key for acquirer-json, a terminal id and a short merchant id for
// ISO 8583.
func (g GatewayConfig) validateProtocolKeys(at string) error {
	switch {
	case g.Protocol == protocolJSON && strings.TrimSpace(g.APIKeyEnv) == "":
		return fmt.Errorf("config: %s.api_key_env: must name an environment variable", at)
	case g.Protocol == protocolJSON && g.TerminalID != "":
		return fmt.Errorf("config: %s.terminal_id: only an iso8583 gateway has one", at)
	case g.Protocol == protocolISO && !validTerminalID(g.TerminalID):
		return fmt.Errorf("config: %s.terminal_id: an iso8583 gateway needs 1 to 8 printable characters (field 41)", at)
	case g.Protocol == protocolISO && len(g.MerchantID) > 15:
		return fmt.Errorf("config: %s.merchant_id: at most 15 characters for an iso8583 gateway (field 42)", at)
	}
	return nil
}

// validateURLs checks each URL's scheme for the protocol: tcp:// or
// tls:// with a port for ISO 8583, http(s) for acquirer-json.
func (g GatewayConfig) validateURLs(at string) error {
	for j, u := range g.URLs {
		p, err := url.Parse(u)
		switch {
		case g.Protocol == protocolISO && (err != nil || (p.Scheme != "tcp" && p.Scheme != "tls") || p.Host == "" || p.Port() == ""):
			return fmt.Errorf("config: %s.urls[%d]: %q is not a tcp:// or tls:// URL with a port", at, j, u)
		case g.Protocol == protocolJSON && (err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == ""):
			return fmt.Errorf("config: %s.urls[%d]: %q is not an http(s) URL", at, j, u)
		}
	}
	return nil
}

// validate checks the offline rules' limits.
func (o OfflineConfig) validate() error {
	switch {
	case o.FloorLimit < 0:
		return errors.New("config: offline.floor_limit: must not be negative")
	case o.TotalLimit < 0:
		return errors.New("config: offline.total_limit: must not be negative")
	case o.MaxAge.Duration <= 0:
		return errors.New("config: offline.max_age: must be positive")
	case o.VelocityCount < 0:
		return errors.New("config: offline.velocity_count: must not be negative")
	case o.VelocityAmount < 0:
		return errors.New("config: offline.velocity_amount: must not be negative")
	case o.VelocityWindow.Duration < 0:
		return errors.New("config: offline.velocity_window: must not be negative")
	case o.Currency != "" && !orders.ValidCurrency(o.Currency):
		return fmt.Errorf("config: offline.currency: %q is not an ISO 4217 currency code (such as \"USD\")", o.Currency)
	}
	return nil
}

// Bounds of the policy knobs. The failsafe-go policies behind them take
// any value, and some fail only once storepay runs: a breaker_window
// under 10 ns divides by zero at the first bank call, breaker_successes
// sizes a bitset allocated when the breaker half-opens (a huge one kills
// the process just as the bank recovers), an attempt_timeout past 97
// years overflows the triple that slow attempts get, and a rate_per_second
// past 1e9 leaves the limiter no permit at all. Past these bounds a value
// is a typo, refused with the key's name, not a policy.
const (
	minPolicyDuration = time.Millisecond
	maxPolicyDuration = 24 * time.Hour
	minRatePerSecond  = 0.001
	maxRatePerSecond  = 1e6
	maxPolicyCount    = 1_000_000
	maxSuccesses      = 1000
)

// checkDuration refuses a policy duration outside the bounds; 0 (the key
// left out) is the default. negativeOff allows a negative value, which
// switches the feature off.
func checkDuration(key string, d time.Duration, negativeOff bool) error {
	switch {
	case d == 0, d < 0 && negativeOff:
		return nil
	case d < minPolicyDuration || d > maxPolicyDuration:
		off := ""
		if negativeOff {
			off = ", or negative to switch it off"
		}
		return fmt.Errorf("config: %s: %s is not between %s and %s (leave it out for the default%s)", key, d, minPolicyDuration, maxPolicyDuration, off)
	}
	return nil
}

// checkCount refuses a negative count or one past max; 0 is the default.
func checkCount(key string, n, max int) error {
	if n < 0 || n > max {
		return fmt.Errorf("config: %s: %d is not between 0 (the default) and %d", key, n, max)
	}
	return nil
}

// checkRate refuses a rate cap outside the bounds; 0 is none.
func checkRate(key string, r float64) error {
	if r != 0 && (r < minRatePerSecond || r > maxRatePerSecond) {
		return fmt.Errorf("config: %s: %g is not between %g and %g per second (leave it out for no cap)", key, r, minRatePerSecond, maxRatePerSecond)
	}
	return nil
}

// validatePolicy checks a gateway's optional policy knobs; at is its path
// (gateways[i]). Like validate it reports the first key at fault
// (cmp.Or: the first non-nil error).
func (g GatewayConfig) validatePolicy(at string) error {
	for _, d := range []struct {
		key string
		d   time.Duration
	}{
		{"attempt_timeout", g.AttemptTimeout.Duration}, {"backoff_min", g.BackoffMin.Duration},
		{"backoff_max", g.BackoffMax.Duration}, {"breaker_window", g.BreakerWindow.Duration},
		{"breaker_delay", g.BreakerDelay.Duration}, {"max_retry_after", g.MaxRetryAfter.Duration},
	} {
		if err := checkDuration(at+"."+d.key, d.d, false); err != nil {
			return err
		}
	}
	return cmp.Or(
		checkDuration(at+".probe_interval", g.ProbeInterval.Duration, true),
		checkCount(at+".max_attempts", g.MaxAttempts, 100),
		checkCount(at+".breaker_min_calls", g.BreakerMinCalls, maxPolicyCount),
		checkCount(at+".breaker_successes", g.BreakerSuccesses, maxSuccesses),
		checkCount(at+".max_concurrent", g.MaxConcurrent, maxPolicyCount),
		checkRate(at+".rate_per_second", g.RatePerSecond),
	)
}

// validate checks the forwarder's knobs. Its interval may be negative:
// the forwarder then only runs when woken.
func (f ForwardingConfig) validate() error {
	switch {
	case f.GuardMaxAmount < 0:
		return errors.New("config: forwarding.guard_max_amount: must not be negative")
	case f.GuardMaxErrors < 0:
		return errors.New("config: forwarding.guard_max_errors: must not be negative")
	}
	return cmp.Or(
		// Each unit of concurrency is a worker and a slot of a buffered
		// channel per bank, made at start.
		checkCount("forwarding.concurrency", f.Concurrency, 1000),
		checkRate("forwarding.rate_per_second", f.RatePerSecond),
		checkCount("forwarding.max_attempts", f.MaxAttempts, maxPolicyCount),
		checkDuration("forwarding.backoff_min", f.BackoffMin.Duration, false),
		checkDuration("forwarding.backoff_max", f.BackoffMax.Duration, false),
		checkDuration("forwarding.interval", f.Interval.Duration, true),
		checkDuration("forwarding.call_timeout", f.CallTimeout.Duration, false),
		checkDuration("forwarding.guard_window", f.GuardWindow.Duration, false),
	)
}

// policy maps a gateway's optional knobs onto the router's policy.
func (g GatewayConfig) policy() gateway.Policy {
	return gateway.Policy{
		AttemptTimeout: g.AttemptTimeout.Duration, MaxAttempts: g.MaxAttempts,
		BackoffMin: g.BackoffMin.Duration, BackoffMax: g.BackoffMax.Duration,
		BreakerFailureRate: g.BreakerFailureRate, BreakerMinCalls: uint(g.BreakerMinCalls),
		BreakerWindow: g.BreakerWindow.Duration, BreakerDelay: g.BreakerDelay.Duration,
		BreakerSuccesses: uint(g.BreakerSuccesses), MaxConcurrent: g.MaxConcurrent,
		RatePerSecond: g.RatePerSecond, ProbeInterval: g.ProbeInterval.Duration,
		MaxRetryAfter: g.MaxRetryAfter.Duration,
	}
}

func (c Config) safRules() saf.Rules {
	o := c.Offline
	return saf.Rules{FloorLimit: o.FloorLimit, TotalLimit: o.TotalLimit, MaxAge: o.MaxAge.Duration,
		VelocityCount: o.VelocityCount, VelocityAmount: o.VelocityAmount, VelocityWindow: o.VelocityWindow.Duration,
		HotCards: o.HotCards, Currency: o.Currency}
}

func (c Config) forwardPolicy() saf.ForwardPolicy {
	f := c.Forwarding
	return saf.ForwardPolicy{Concurrency: f.Concurrency, RatePerSecond: f.RatePerSecond, MaxAttempts: f.MaxAttempts,
		BackoffMin: f.BackoffMin.Duration, BackoffMax: f.BackoffMax.Duration, Interval: f.Interval.Duration,
		CallTimeout: f.CallTimeout.Duration, GuardWindow: f.GuardWindow.Duration, GuardMaxErrors: f.GuardMaxErrors,
		GuardMaxAmount: f.GuardMaxAmount}
}

// validListen checks a listen address without binding it: host:port with
// a numeric port, and a host that is empty, an IP address, or a name.
func validListen(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("is not host:port")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || (port != "0" && n == 0) {
		return errors.New("needs a port number from 0 to 65535")
	}
	if host == "" || net.ParseIP(host) != nil {
		return nil
	}
	// Not an IP address: it must be a host name, and all-digit labels
	// (999.1.1.1) are a mistyped address, not a name.
	digits := true
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("has an invalid host")
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return errors.New("has an invalid host")
			}
			if c < '0' || c > '9' {
				digits = false
			}
		}
	}
	if digits {
		return errors.New("has an invalid IP address")
	}
	return nil
}

// The gateway protocols.
const (
	protocolJSON = "acquirer-json"
	protocolISO  = "iso8583"
)

// validTerminalID reports whether s can be an ISO 8583 field 41: 1 to 8
// printable ASCII characters without surrounding spaces.
func validTerminalID(s string) bool {
	if len(s) < 1 || len(s) > 8 || strings.TrimSpace(s) != s {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func (h *HQConfig) validate(storeID string) error {
	if h == nil {
		return nil
	}
	if !hq.ValidStoreID(storeID) {
		return fmt.Errorf("config: store_id: with an hq block it must be 1-64 letters, digits, - or _ (and not %q)", hq.HubDomain)
	}
	if len(h.URLs) == 0 {
		return errors.New("config: hq.urls: must name at least one headquarters leaf endpoint")
	}
	for i, u := range h.URLs {
		p, err := url.Parse(u)
		if err != nil || (p.Scheme != "nats-leaf" && p.Scheme != "nats" && p.Scheme != "tls") || p.Host == "" || p.User != nil {
			return fmt.Errorf("config: hq.urls[%d]: %q must be nats-leaf://host:port (credentials go in credentials_env)", i, u)
		}
	}
	if strings.TrimSpace(h.CredentialsEnv) == "" {
		return errors.New("config: hq.credentials_env: must name an environment variable")
	}
	if strings.TrimSpace(h.DataDir) == "" {
		return errors.New("config: hq.data_dir: must not be empty")
	}
	if r := h.Retention.Duration; r != 0 && (r < time.Hour || r > 366*24*time.Hour) {
		return errors.New("config: hq.retention: must be between 1h and 366 days")
	}
	if h.MaxBytes < 0 || (h.MaxBytes > 0 && h.MaxBytes < 1<<20) {
		return errors.New("config: hq.max_bytes: must be at least 1048576 (1 MiB)")
	}
	return nil
}
