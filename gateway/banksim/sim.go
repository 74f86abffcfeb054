package banksim

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultAPIKey is the API key a Sim accepts when Config.APIKey is empty.
const DefaultAPIKey = "sk_test_banksim"

// Config configures a [Sim].
type Config struct {
	// APIKey is the key clients must send as a bearer token. Empty means
	// DefaultAPIKey.
	APIKey string
	// MoreAPIKeys are further accepted keys. Each key is its own account:
	// idempotency keys, lookups and settlement reports are kept per API key.
	MoreAPIKeys []string
	// MerchantID, when set, is the only merchant_id accepted; other
	// merchants are rejected with 422 invalid_merchant.
	MerchantID string
	// Now is the bank's clock (business dates, expiry, rate limits).
	// Nil means time.Now.
	Now func() time.Time
	// Logger receives the simulator's logs. Nil discards them. Request
	// bodies are never logged.
	Logger *slog.Logger
	// LateCutoff, when positive, is the UTC time of day after which a
	// booking goes into the next business date's report (a batch closed
	// late). Zero books everything on its own UTC date.
	LateCutoff time.Duration
	// Fee computes the fee_amount (negative) of a capture's gross amount.
	// Nil means DefaultFee.
	Fee func(gross int64) int64
	// DailyFee, when positive, adds one Fee row of -DailyFee per currency
	// to every report that has other rows.
	DailyFee int64
	// KeyTTL is how long idempotency keys are kept. Zero means 7 days, the
	// protocol's minimum.
	KeyTTL time.Duration
	// Rand returns random text for ids and authorization codes. Nil means
	// crypto/rand's Text. The simulator passes one made from its seed.
	Rand func() string
}

// DefaultFee is the fee of a capture: -(2.9% of gross, rounded, + 30).
func DefaultFee(gross int64) int64 {
	return -((gross*29+500)/1000 + 30)
}

// Sim is a simulated acquirer: one ledger served by any number of protocol
// listeners (a bank's failover URLs) and an admin listener. Create it with
// [New], start listeners with [Sim.Listen] and [Sim.ListenAdmin], stop it
// with [Sim.Close]. Its methods are safe for concurrent use.
type Sim struct {
	cfg  Config
	now  func() time.Time
	log  *slog.Logger
	keys map[string]bool // accepted API keys
	done chan struct{}   // closed by Close

	lnMu      sync.Mutex // guards the fields below
	closed    bool
	listeners []*listener
	admin     *http.Server
	wg        sync.WaitGroup // serve goroutines

	faultsMu sync.Mutex // guards the fields below
	global   *faultSet
	byURL    map[string]*faultSet
	changed  chan struct{} // closed and replaced whenever faults change

	idem idemStore
	book book
	iso  isoBook // the ISO 8583 switch's duplicate and field 90 indexes (iso.go)
}

// listener is one protocol URL of the bank.
type listener struct {
	url   string
	addr  string       // the resolved host:port, to listen again after Refuse
	srv   *http.Server // nil while refused, and for an ISO 8583 listener; guarded by Sim.lnMu
	ln    net.Listener // the socket, nil while refused; guarded by Sim.lnMu
	calls [numEndpoints + 1]atomic.Int64
	iso   *isoListener // set for an ISO 8583 listener (iso.go)
	// inproc: served by Handler, with no socket to refuse.
	inproc bool
}

// New returns a Sim with an empty ledger and no listener.
func New(cfg Config) *Sim {
	if cfg.APIKey == "" {
		cfg.APIKey = DefaultAPIKey
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Fee == nil {
		cfg.Fee = DefaultFee
	}
	if cfg.KeyTTL <= 0 {
		cfg.KeyTTL = 7 * 24 * time.Hour
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Text
	}
	s := &Sim{
		cfg:     cfg,
		now:     func() time.Time { return cfg.Now().UTC().Truncate(time.Millisecond) },
		log:     cfg.Logger,
		keys:    map[string]bool{cfg.APIKey: true},
		done:    make(chan struct{}),
		byURL:   map[string]*faultSet{},
		changed: make(chan struct{}),
	}
	for _, k := range cfg.MoreAPIKeys {
		s.keys[k] = true
	}
	s.idem.init()
	s.book.init()
	s.iso.init()
	return s
}

// Listen starts a protocol listener on addr ("127.0.0.1:0" picks a free
// port) and returns its URL, such as "http://127.0.0.1:41234".
func (s *Sim) Listen(addr string) (string, error) {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.closed {
		return "", errors.New("banksim: closed")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("banksim: listen: %w", err)
	}
	l := &listener{addr: ln.Addr().String()}
	l.url = "http://" + l.addr
	s.listeners = append(s.listeners, l)
	s.serve(l, ln)
	s.log.Info("banksim listening", "url", l.url)
	// Faults set for every listener apply to this one from the start.
	if err := s.applyRefuse(); err != nil {
		return l.url, err
	}
	return l.url, nil
}

// Handler returns the protocol as a handler, served in-process under
// url (which names it in the ledger and in faults) without a socket: for
// the simulator, which calls it from its own transport.
func (s *Sim) Handler(url string) http.Handler {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	l := &listener{url: url, inproc: true}
	s.listeners = append(s.listeners, l)
	return s.protocolHandler(l)
}

// ListenAdmin starts the admin listener (see [Sim.AdminHandler]) on addr
// and returns its URL. Keep it on loopback: it has no authentication.
func (s *Sim) ListenAdmin(addr string) (string, error) {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	if s.closed {
		return "", errors.New("banksim: closed")
	}
	if s.admin != nil {
		return "", errors.New("banksim: admin listener already started")
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("banksim: listen admin: %w", err)
	}
	s.admin = s.newServer(s.AdminHandler())
	s.wg.Go(func() { _ = s.admin.Serve(ln) })
	url := "http://" + ln.Addr().String()
	s.log.Info("banksim admin listening", "url", url)
	return url, nil
}

// URLs returns the protocol listeners' URLs in the order they were started.
func (s *Sim) URLs() []string {
	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	urls := make([]string, len(s.listeners))
	for i, l := range s.listeners {
		urls[i] = l.url
	}
	return urls
}

// Close stops every listener, releases requests held by faults and waits
// for the servers to stop. The ledger stays readable.
func (s *Sim) Close() error {
	s.lnMu.Lock()
	if s.closed {
		s.lnMu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	var servers []*http.Server
	for _, l := range s.listeners {
		if l.iso != nil && l.ln != nil {
			s.stopISO(l)
		}
		if l.srv != nil {
			servers = append(servers, l.srv)
			l.srv, l.ln = nil, nil
		}
	}
	if s.admin != nil {
		servers = append(servers, s.admin)
	}
	s.lnMu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	for _, srv := range servers {
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, srv.Close())
		}
	}
	s.wg.Wait()
	return errors.Join(errs...)
}

// newServer returns an http.Server with the simulator's limits. There is no
// write timeout: blackholed requests must be able to hang.
func (s *Sim) newServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// serve starts l's server on ln. Caller holds lnMu.
func (s *Sim) serve(l *listener, ln net.Listener) {
	if l.iso != nil {
		s.serveISO(l, ln)
		return
	}
	srv := s.newServer(s.protocolHandler(l))
	l.srv, l.ln = srv, ln
	s.wg.Go(func() { _ = srv.Serve(ln) })
}

// SetFaults installs f on the listener with URL url, or on every listener
// when url is "". It replaces what was installed there before, releasing
// requests held by the old faults; the faults of the other target stay
// (both apply). Faults{} lifts everything at that target.
func (s *Sim) SetFaults(url string, f Faults) error {
	if err := f.validate(); err != nil {
		return fmt.Errorf("banksim: %w", err)
	}
	url = strings.TrimRight(url, "/")
	if url != "" && !slices.Contains(s.URLs(), url) {
		return fmt.Errorf("banksim: no listener %q", url)
	}
	s.faultsMu.Lock()
	fs := newFaultSet(f)
	if url == "" {
		s.global = fs
	} else {
		s.byURL[url] = fs
	}
	s.notifyLocked()
	s.faultsMu.Unlock()
	s.log.Info("banksim faults set", "url", url, "faults", f)

	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	return s.applyRefuse()
}

// ClearFaults lifts every fault on every listener and listens again where
// Refuse had closed the port.
func (s *Sim) ClearFaults() error {
	s.faultsMu.Lock()
	s.global = nil
	clear(s.byURL)
	s.notifyLocked()
	s.faultsMu.Unlock()
	s.log.Info("banksim faults cleared")

	s.lnMu.Lock()
	defer s.lnMu.Unlock()
	return s.applyRefuse()
}

// Faults returns the installed faults: "" for every listener, else by URL.
func (s *Sim) Faults() map[string]Faults {
	s.faultsMu.Lock()
	defer s.faultsMu.Unlock()
	out := map[string]Faults{}
	if s.global != nil {
		out[""] = s.global.spec
	}
	for url, fs := range s.byURL {
		out[url] = fs.spec
	}
	return out
}

// notifyLocked wakes every request waiting on the faults. Caller holds
// faultsMu.
func (s *Sim) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// applyRefuse closes or reopens each listener to match the Refuse faults.
// Caller holds lnMu.
func (s *Sim) applyRefuse() error {
	if s.closed {
		return nil
	}
	s.faultsMu.Lock()
	refuse := map[*listener]bool{}
	for _, l := range s.listeners {
		refuse[l] = (s.global != nil && s.global.spec.Refuse) ||
			(s.byURL[l.url] != nil && s.byURL[l.url].spec.Refuse)
	}
	s.faultsMu.Unlock()

	var errs []error
	for _, l := range s.listeners {
		switch {
		case l.inproc:
		case refuse[l] && l.iso != nil && l.ln != nil:
			s.stopISO(l)
			s.log.Info("banksim refusing connections", "url", l.url)
		case refuse[l] && l.srv != nil:
			// Close, not Shutdown: a refusing bank has crashed, its open
			// connections die with it.
			_ = l.srv.Close()
			// Close the socket here too: srv.Close misses a listener
			// whose Serve goroutine has not started yet, and a client
			// would meanwhile connect into its accept queue.
			_ = l.ln.Close()
			l.srv, l.ln = nil, nil
			s.log.Info("banksim refusing connections", "url", l.url)
		case !refuse[l] && l.ln == nil:
			ln, err := net.Listen("tcp", l.addr)
			if err != nil {
				errs = append(errs, fmt.Errorf("banksim: listen again on %s: %w", l.addr, err))
				continue
			}
			s.serve(l, ln)
			s.log.Info("banksim accepting connections again", "url", l.url)
		}
	}
	return errors.Join(errs...)
}

// decide draws the faults for one request arriving at listener url.
func (s *Sim) decide(url string, health bool) decision {
	s.faultsMu.Lock()
	defer s.faultsMu.Unlock()
	var d decision
	now := s.now()
	for _, fs := range []*faultSet{s.global, s.byURL[url]} {
		if fs != nil {
			fs.decide(&d, now, health)
		}
	}
	return d
}

// watch returns a channel closed at the next fault change and whether any
// of sets is still installed for url.
func (s *Sim) watch(url string, sets []*faultSet) (<-chan struct{}, bool) {
	s.faultsMu.Lock()
	defer s.faultsMu.Unlock()
	for _, fs := range sets {
		if fs == s.global || fs == s.byURL[url] {
			return s.changed, true
		}
	}
	return s.changed, false
}

// hold blocks a blackholed request while its fault is installed. It
// reports false when the request must be dropped unanswered: the client
// gave up or the simulator is closing.
func (s *Sim) hold(ctx context.Context, url string, sets []*faultSet) bool {
	for {
		changed, installed := s.watch(url, sets)
		if !installed {
			return true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		case <-s.done:
			return false
		}
	}
}

// delay waits d, cut short when the latency faults are lifted or the
// simulator closes. It does not watch the client: a bank finishes work its
// client stopped waiting for.
func (s *Sim) delay(url string, d time.Duration, sets []*faultSet) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		changed, installed := s.watch(url, sets)
		if !installed {
			return
		}
		select {
		case <-changed:
		case <-t.C:
			return
		case <-s.done:
			return
		}
	}
}

// Reset empties the ledger, forgets every idempotency key, closed day and
// extra settlement row, zeroes the request counters and lifts all faults:
// a fresh bank on the same URLs.
func (s *Sim) Reset() error {
	s.book.reset()
	s.idem.reset()
	s.iso.reset()
	s.lnMu.Lock()
	for _, l := range s.listeners {
		for i := range l.calls {
			l.calls[i].Store(0)
		}
		if l.iso != nil {
			l.iso.resetCounts()
		}
	}
	s.lnMu.Unlock()
	s.log.Info("banksim reset")
	return s.ClearFaults()
}
