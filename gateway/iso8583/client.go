package iso8583

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"storepay/gateway"
)

// Config configures a [Client] for one URL of one ISO 8583 gateway.
type Config struct {
	// URL is tcp://host:port, or tls://host:port for TLS.
	URL string
	// Gateway is the bank's configured name, copied into every
	// *gateway.Error and log line.
	Gateway string
	// Terminal is the terminal_id, merchant_id and local time zone of
	// every message.
	Terminal Terminal
	// STANs hands out the STANs of the client's own messages (sign-on
	// and echo). Use the allocator the caller takes its STANs from.
	STANs STANAllocator
	// TLS configures tls:// URLs. Nil means the system's roots, TLS 1.2
	// at least, and the URL's host as server name.
	TLS *tls.Config
	// Timeout is the longest wait for an answer after the request was
	// written, when the caller's context allows longer. Zero means 30s.
	Timeout time.Duration
	// ConnectTimeout bounds dialing, the TLS handshake and the sign-on.
	// Zero means 10s.
	ConnectTimeout time.Duration
	// WriteTimeout bounds one write to the socket: a peer that stops
	// reading gets the connection dropped. Zero means 10s.
	WriteTimeout time.Duration
	// BackoffMin and BackoffMax bound the exponential wait (with 25%
	// jitter) between connection attempts. Zero means 100ms and 5s.
	BackoffMin, BackoffMax time.Duration
	// LateWindow is how long the answer to a request its caller gave up
	// on is recognized as a late answer (logged, counted, handed to
	// OnLateAnswer). After it, such an answer is unsolicited: bad input.
	// Zero means 10 minutes.
	LateWindow time.Duration
	// OnLateAnswer, when set, is called (in its own goroutine) with
	// every late answer, after it was logged and counted. It must not
	// take the answer for an outcome: the caller that gave up resolves
	// the operation by a reversal or a repeat.
	OnLateAnswer func(LateAnswer)
	// Now is the clock of field 7 in sign-on and echo. Nil means
	// time.Now.
	Now func() time.Time
	// Logger receives the client's logs. Nil discards them. Card numbers
	// are never logged.
	Logger *slog.Logger
	// Transport, when set, exchanges each message in-process instead of
	// over a connection: no dialing, no sign-on, no worker; the client
	// is ready at once. It must return the answer or a classified
	// *gateway.Error. For the simulator (cmd/storepay-sim), which drives
	// every message itself.
	Transport func(ctx context.Context, req Fields) (Fields, error)
}

// LateAnswer is an answer that came after its caller stopped waiting. It
// changes nothing: the caller already took the outcome as unknown.
type LateAnswer struct {
	Gateway, URL string
	// Request names the request it answers.
	Request      Original
	RRN          string
	MTI          string
	ResponseCode string
	AuthCode     string
	// AbandonedAt is when the caller gave up; ReceivedAt when the answer
	// came.
	AbandonedAt, ReceivedAt time.Time
}

// Stats are the client's counters since it was created.
type Stats struct {
	// SignOns counts connections that signed on.
	SignOns int64
	// ConnectFailures counts attempts that did not sign on (refused,
	// TLS failure, sign-on refused or unanswered).
	ConnectFailures int64
	// Disconnects counts signed-on connections that were lost.
	Disconnects int64
	// LateAnswers counts answers that came after their caller gave up.
	LateAnswers int64
	// BadInput counts bad input by reason (the Reason constants).
	BadInput map[string]int64
}

var badInputReasons = [...]string{ReasonBadLength, ReasonOversize, ReasonMalformed, ReasonUnknownMTI, ReasonUnsolicited}

type linkState int

const (
	stateIdle       linkState = iota // not opened
	stateConnecting                  // dialing or signing on
	stateUp                          // signed on: sess is set
	stateDown                        // waiting before the next attempt: lastErr says why
	stateClosed
)

// Client speaks the profile to one URL of one gateway over one
// long-lived connection: it dials, signs on, and reconnects with backoff
// when the connection is lost, in a background worker started by
// [Client.Open] and stopped by [Client.Close]. Requests share the
// connection, several in flight, matched to their answers by STAN and
// terminal_id. It is safe for concurrent use.
type Client struct {
	cfg     Config
	url     string
	addr    string      // host:port
	tlsConf *tls.Config // nil for tcp://
	log     *slog.Logger
	attrs   metric.MeasurementOption

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{} // wakes the worker during a backoff

	mu      sync.Mutex // guards the fields below
	state   linkState
	sess    *session
	lastErr *gateway.Error // why the link is down
	changed chan struct{}  // closed and replaced at every state change
	late    map[string]lateEntry

	signOns, connectFailures, disconnects, lateCount atomic.Int64
	bad                                              [len(badInputReasons)]atomic.Int64
}

// lateEntry remembers a written request whose caller gave up.
type lateEntry struct {
	respMTI string
	rrn     string
	req     Original
	at      time.Time
}

// maxLate bounds the late answers remembered at once.
const maxLate = 10000

// NewClient checks cfg and returns a Client. It does not connect: call
// [Client.Open].
func NewClient(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" || u.Port() == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("iso8583: URL %q is not tcp://host:port or tls://host:port", cfg.URL)
	}
	c := &Client{cfg: cfg, url: cfg.URL, addr: u.Host, changed: make(chan struct{}), kick: make(chan struct{}, 1), late: map[string]lateEntry{}}
	switch u.Scheme {
	case "tcp":
	case "tls":
		conf := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.TLS != nil {
			conf = cfg.TLS.Clone()
		}
		if conf.ServerName == "" {
			conf.ServerName = u.Hostname()
		}
		c.tlsConf = conf
	default:
		return nil, fmt.Errorf("iso8583: URL %q is not tcp://host:port or tls://host:port", cfg.URL)
	}
	if err := cfg.Terminal.check(); err != nil {
		return nil, fmt.Errorf("iso8583: %w", err)
	}
	if cfg.STANs == nil {
		return nil, errors.New("iso8583: no STAN allocator")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.cfg.Timeout, 30*time.Second)
	def(&c.cfg.ConnectTimeout, 10*time.Second)
	def(&c.cfg.WriteTimeout, 10*time.Second)
	def(&c.cfg.BackoffMin, 100*time.Millisecond)
	def(&c.cfg.BackoffMax, 5*time.Second)
	def(&c.cfg.LateWindow, 10*time.Minute)
	if c.cfg.BackoffMax < c.cfg.BackoffMin {
		c.cfg.BackoffMax = c.cfg.BackoffMin
	}
	if c.cfg.Now == nil {
		c.cfg.Now = time.Now
	}
	c.log = cfg.Logger
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("gateway", cfg.Gateway, "url", cfg.URL)
	c.attrs = metric.WithAttributes(attribute.String("gateway", cfg.Gateway), attribute.String("url", cfg.URL))
	return c, nil
}

// URL returns the switch's URL.
func (c *Client) URL() string { return c.url }

// Open starts the worker that connects, signs on and reconnects. It
// returns at once: a switch that is down does not stop the caller, and
// requests meanwhile fail with KindNotSent.
func (c *Client) Open() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateIdle {
		return errors.New("iso8583: client already opened")
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	if c.cfg.Transport != nil {
		c.setStateLocked(stateUp, nil, nil)
		return nil
	}
	c.setStateLocked(stateConnecting, nil, nil)
	c.wg.Add(1)
	go c.run()
	return nil
}

// Close stops the worker and closes the connection. Requests still in
// flight end as they would on a lost connection: unknown when their
// message was written, KindNotSent when it was not.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.state == stateIdle || c.state == stateClosed {
		c.setStateLocked(stateClosed, nil, nil)
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	c.cancel()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("iso8583: close %s: %w", c.url, ctx.Err())
	}
}

// Ready reports whether the client is signed on.
func (c *Client) Ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == stateUp
}

// WaitReady waits until the client is signed on, or ctx is done.
func (c *Client) WaitReady(ctx context.Context) error {
	for {
		c.mu.Lock()
		state, changed := c.state, c.changed
		c.mu.Unlock()
		switch state {
		case stateUp:
			return nil
		case stateClosed:
			return errors.New("iso8583: client closed")
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	s := Stats{
		SignOns:         c.signOns.Load(),
		ConnectFailures: c.connectFailures.Load(),
		Disconnects:     c.disconnects.Load(),
		LateAnswers:     c.lateCount.Load(),
		BadInput:        map[string]int64{},
	}
	for i, r := range badInputReasons {
		if n := c.bad[i].Load(); n > 0 {
			s.BadInput[r] = n
		}
	}
	return s
}

// setStateLocked changes the link state and wakes its waiters. Caller
// holds mu.
func (c *Client) setStateLocked(st linkState, sess *session, why *gateway.Error) {
	if c.state == stateClosed {
		return
	}
	c.state, c.sess, c.lastErr = st, sess, why
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *Client) setState(st linkState, sess *session, why *gateway.Error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setStateLocked(st, sess, why)
}

// run is the worker: connect and sign on, serve until the connection is
// lost, wait, again.
func (c *Client) run() {
	defer c.wg.Done()
	defer c.setState(stateClosed, nil, nil)
	backoff := c.cfg.BackoffMin
	for {
		c.setState(stateConnecting, nil, nil)
		sess, err := c.connect(c.ctx)
		if c.ctx.Err() != nil {
			if sess != nil {
				sess.close()
			}
			return
		}
		if err != nil {
			c.connectFailures.Add(1)
			outcome := "failed"
			if e := gateway.AsError(err); e != nil && e.Code != "" {
				outcome = "refused"
			}
			connections.Add(c.ctx, 1, c.attrs, metric.WithAttributes(attribute.String("outcome", outcome)))
			c.log.Warn("iso8583 connection failed", "err", err, "retry_in", backoff)
			c.setState(stateDown, nil, gateway.AsError(err))
			if !c.pause(backoff) {
				return
			}
			backoff = min(backoff*2, c.cfg.BackoffMax)
			continue
		}
		c.signOns.Add(1)
		connections.Add(c.ctx, 1, c.attrs, metric.WithAttributes(attribute.String("outcome", "signed_on")))
		c.log.Info("iso8583 signed on")
		up := time.Now()
		c.setState(stateUp, sess, nil)
		select {
		case <-sess.dead:
		case <-c.ctx.Done():
			sess.close()
			return
		}
		c.disconnects.Add(1)
		connections.Add(c.ctx, 1, c.attrs, metric.WithAttributes(attribute.String("outcome", "lost")))
		why := sess.reason()
		c.log.Warn("iso8583 connection lost", "err", why)
		c.setState(stateDown, nil, c.fail(gateway.KindNotSent, "", fmt.Errorf("connection lost: %w", why)))
		// A connection that lived long reconnects at once; one that
		// died young (a switch that drops every connection, bad
		// input on each) backs off like a failed attempt.
		if time.Since(up) >= c.cfg.BackoffMax {
			backoff = c.cfg.BackoffMin
			continue
		}
		if !c.pause(backoff) {
			return
		}
		backoff = min(backoff*2, c.cfg.BackoffMax)
	}
}

// pause waits d with 25% jitter, cut short by a kick. It reports false
// when the client is closing.
func (c *Client) pause(d time.Duration) bool {
	d += time.Duration(rand.Int64N(int64(d)/4 + 1))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.kick:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// connect dials, and signs on within ConnectTimeout.
func (c *Client) connect(ctx context.Context) (*session, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ConnectTimeout)
	defer cancel()
	dialer := &net.Dialer{KeepAlive: 15 * time.Second}
	var nc net.Conn
	var err error
	if c.tlsConf != nil {
		nc, err = (&tls.Dialer{NetDialer: dialer, Config: c.tlsConf}).DialContext(ctx, "tcp", c.addr)
	} else {
		nc, err = dialer.DialContext(ctx, "tcp", c.addr)
	}
	if err != nil {
		return nil, c.fail(gateway.KindNotSent, "", fmt.Errorf("connect: %w", err))
	}
	sess, err := newSession(c, nc)
	if err != nil {
		_ = nc.Close()
		return nil, c.fail(gateway.KindNotSent, "", err)
	}
	stan, err := c.cfg.STANs.NextSTAN(ctx)
	if err != nil {
		sess.close()
		return nil, c.fail(gateway.KindNotSent, "", fmt.Errorf("sign-on STAN: %w", err))
	}
	req, err := NetworkFields(c.cfg.Terminal, NetworkSignOn, stan, c.cfg.Now())
	if err != nil {
		sess.close()
		return nil, c.fail(gateway.KindNotSent, "", fmt.Errorf("sign-on: %w", err))
	}
	ans, err := sess.roundTrip(ctx, req)
	if err != nil {
		sess.close()
		// Whatever the sign-on's fate, no other message went out.
		return nil, c.fail(gateway.KindNotSent, "", fmt.Errorf("sign-on: %w", err))
	}
	if ans.ResponseCode != CodeApproved {
		sess.close()
		kind, code := gateway.KindNotSent, "sign_on_refused"
		if ans.ResponseCode == CodeInvalidMerchant {
			kind, code = gateway.KindUnauthorized, ErrCodeInvalidMerchant
		}
		return nil, c.fail(kind, code, &ResponseError{MTI: ans.MTI, Code: ans.ResponseCode})
	}
	return sess, nil
}

// session returns the signed-on session, waiting while a connection
// attempt is under way. When the link is down it fails at once with
// why: nothing was sent.
func (c *Client) session(ctx context.Context) (*session, error) {
	for {
		c.mu.Lock()
		state, sess, why, changed := c.state, c.sess, c.lastErr, c.changed
		c.mu.Unlock()
		switch state {
		case stateUp:
			return sess, nil
		case stateDown:
			if why == nil {
				why = c.fail(gateway.KindNotSent, "", errors.New("not connected"))
			}
			return nil, why
		case stateIdle:
			return nil, c.fail(gateway.KindNotSent, "", errors.New("client not opened"))
		case stateClosed:
			return nil, c.fail(gateway.KindNotSent, "", errors.New("client closed"))
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, c.fail(gateway.KindNotSent, "", fmt.Errorf("still connecting: %w", ctx.Err()))
		}
	}
}

// Exchange sends one request and returns its answer, with the transport's
// failures classified: KindNotSent when nothing was sent (not connected,
// sign-on refused, the context done before the write), KindUnknown when
// the request was written and no answer came (timeout, cancel, the
// connection closed), KindRejected with Code invalid_request when the
// request breaks the profile (nothing sent) or duplicate_stan when its
// STAN and terminal are already in flight. The answer's response code is
// not looked at: see the typed methods ([Client.Purchase], ...).
func (c *Client) Exchange(ctx context.Context, req Fields) (Fields, error) {
	if c.cfg.Transport != nil {
		return c.cfg.Transport(ctx, req)
	}
	sess, err := c.session(ctx)
	if err != nil {
		exchanges.Add(context.WithoutCancel(ctx), 1, c.attrs, metric.WithAttributes(attribute.String("mti", req.MTI), attribute.String("outcome", "not_sent")))
		return Fields{}, err
	}
	ans, err := sess.roundTrip(ctx, req)
	outcome := "answered"
	if err != nil {
		outcome = "unknown"
		if gateway.NothingDone(err) {
			outcome = "not_sent"
		}
	}
	exchanges.Add(context.WithoutCancel(ctx), 1, c.attrs, metric.WithAttributes(attribute.String("mti", req.MTI), attribute.String("outcome", outcome)))
	return ans, err
}

// Echo sends an echo test (0800, field 70 = 301): nil when the switch
// answers 0810 with 00. It is the health probe. A refused sign-on or a
// lost connection fails at once, and wakes the worker to try again now.
func (c *Client) Echo(ctx context.Context) error {
	c.mu.Lock()
	if c.state == stateDown {
		select {
		case c.kick <- struct{}{}:
		default:
		}
	}
	c.mu.Unlock()
	stan, err := c.cfg.STANs.NextSTAN(ctx)
	if err != nil {
		return c.fail(gateway.KindNotSent, "", fmt.Errorf("echo STAN: %w", err))
	}
	req, err := NetworkFields(c.cfg.Terminal, NetworkEcho, stan, c.cfg.Now())
	if err != nil {
		return c.invalid(err)
	}
	f, err := c.Exchange(ctx, req)
	if err != nil {
		return err
	}
	ans := Answer{MTI: f.MTI, RRN: f.RRN, ResponseCode: f.ResponseCode, AuthCode: f.AuthCode}
	if err := Classify(ans, c.cfg.Gateway, c.url); err != nil {
		return err
	}
	if !ans.Approved() {
		return c.fail(gateway.KindNotProcessed, ErrCodeNotProcessed, &ResponseError{MTI: f.MTI, Code: f.ResponseCode})
	}
	return nil
}

// Authorize sends a pre-authorization (0100). See [Client.Purchase] for
// what comes back.
func (c *Client) Authorize(ctx context.Context, r Authorization) (Answer, error) {
	return c.send(ctx, r.Ref(), func() (Fields, error) { return r.Fields(c.cfg.Terminal) })
}

// Purchase sends a sale (0200). An approval (00) and a decline (05, 14,
// 41, 43, 51, 54: [Answer.DeclineCode]) are answers with a nil error; any
// other response code is a *gateway.Error as [Classify] says; transport
// failures are as [Client.Exchange] says. The Answer's Sent is set even
// with an error, for the caller to persist: a reversal of an unknown
// outcome names it in field 90.
func (c *Client) Purchase(ctx context.Context, r Purchase) (Answer, error) {
	return c.send(ctx, r.Ref(), func() (Fields, error) { return r.Fields(c.cfg.Terminal) })
}

// Refund sends a refund (0200, processing code 200000). 12 (the original
// is unknown) and 13 (above what is left) are KindRejected.
func (c *Client) Refund(ctx context.Context, r Refund) (Answer, error) {
	return c.send(ctx, r.Ref(), func() (Fields, error) { return r.Fields(c.cfg.Terminal) })
}

// Complete sends a completion (0220, or 0221 with Repeat). 13 (above the
// 20% allowance) and 12 (unknown authorization) are KindRejected. An
// advice must be delivered: on an unknown outcome or KindNotProcessed (91)
// the caller sends it again with Repeat, the same Trace, until it gets
// any other answer.
func (c *Client) Complete(ctx context.Context, r Completion) (Answer, error) {
	return c.send(ctx, r.Ref(), func() (Fields, error) { return r.Fields(c.cfg.Terminal) })
}

// Advise forwards a payment accepted offline (0220 with 38 = Y3, or 0221
// with Repeat). 00 is a charge; a decline is declined_after_forward.
// Repeat as for [Client.Complete].
func (c *Client) Advise(ctx context.Context, r OfflineAdvice) (Answer, error) {
	return c.send(ctx, r.Ref(), func() (Fields, error) { return r.Fields(c.cfg.Terminal) })
}

// Reverse sends a reversal advice (0420, or 0421 with Repeat). 00 means
// the bank holds nothing of the original any more (it reversed it, or
// never received it). Repeat as for [Client.Complete] until any answer
// other than 91 or 96.
func (c *Client) Reverse(ctx context.Context, r Reversal) (Answer, error) {
	return c.send(ctx, r.Ref(), func() (Fields, error) { return r.Fields(c.cfg.Terminal) })
}

func (c *Client) send(ctx context.Context, sent Original, build func() (Fields, error)) (Answer, error) {
	req, err := build()
	if err != nil {
		return Answer{}, c.invalid(err)
	}
	ans := Answer{Sent: sent}
	f, err := c.Exchange(ctx, req)
	if err != nil {
		return ans, err
	}
	ans.MTI, ans.RRN, ans.ResponseCode, ans.AuthCode = f.MTI, f.RRN, f.ResponseCode, f.AuthCode
	return ans, Classify(ans, c.cfg.Gateway, c.url)
}

func (c *Client) fail(kind gateway.Kind, code string, err error) *gateway.Error {
	return &gateway.Error{Kind: kind, Gateway: c.cfg.Gateway, URL: c.url, Code: code, Err: err}
}

// invalid is a request the client refuses to send.
func (c *Client) invalid(err error) *gateway.Error {
	return c.fail(gateway.KindRejected, codeInvalidRequest, err)
}

// Codes of the requests the client refuses to send.
const (
	codeInvalidRequest = "invalid_request"
	codeDuplicateSTAN  = "duplicate_stan"
)

// countBad logs and counts bad input.
func (c *Client) countBad(e *BadInputError) {
	for i, r := range badInputReasons {
		if r == e.Reason {
			c.bad[i].Add(1)
		}
	}
	badInputs.Add(context.Background(), 1, c.attrs, metric.WithAttributes(attribute.String("reason", e.Reason)))
	c.log.Warn("iso8583 bad input from the switch: dropping the connection", "reason", e.Reason, "err", e.Err)
}

// abandoned remembers a written request whose caller gave up, so that its
// answer is known as late, not unsolicited.
func (c *Client) abandoned(key string, req Fields) {
	now := time.Now()
	orig := Original{MTI: FirstMTI(req.MTI), TransmissionTime: req.TransmissionTime}
	orig.STAN, _ = ParseSTAN(req.STAN)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.late) >= maxLate {
		for k, e := range c.late {
			if now.Sub(e.at) > c.cfg.LateWindow || len(c.late) >= maxLate {
				delete(c.late, k)
			}
		}
	}
	c.late[key] = lateEntry{respMTI: ResponseMTI(req.MTI), rrn: req.RRN, req: orig, at: now}
}

// forgetLate drops the late record of key: a new request reuses it.
func (c *Client) forgetLate(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.late, key)
}

// takeLate handles ans if it answers an abandoned request: logged,
// counted, handed to OnLateAnswer, and nothing else. It reports whether
// it did.
func (c *Client) takeLate(key string, ans Fields) bool {
	now := time.Now()
	c.mu.Lock()
	e, ok := c.late[key]
	if ok && now.Sub(e.at) > c.cfg.LateWindow {
		delete(c.late, key)
		ok = false
	}
	if !ok || e.respMTI != ans.MTI || (e.rrn != "" && ans.RRN != e.rrn) {
		c.mu.Unlock()
		return false
	}
	delete(c.late, key)
	c.mu.Unlock()

	c.lateCount.Add(1)
	lateAnswers.Add(context.Background(), 1, c.attrs, metric.WithAttributes(attribute.String("mti", ans.MTI)))
	la := LateAnswer{
		Gateway: c.cfg.Gateway, URL: c.url, Request: e.req, RRN: ans.RRN, MTI: ans.MTI,
		ResponseCode: ans.ResponseCode, AuthCode: ans.AuthCode, AbandonedAt: e.at, ReceivedAt: now,
	}
	c.log.Warn("iso8583 late answer: its caller gave up, nothing changes",
		"mti", ans.MTI, "stan", ans.STAN, "rrn", ans.RRN, "response_code", ans.ResponseCode, "late_by", now.Sub(e.at))
	if c.cfg.OnLateAnswer != nil {
		go c.cfg.OnLateAnswer(la)
	}
	return true
}
