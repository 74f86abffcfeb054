package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"storepay/gateway"
	"storepay/gateway/banksim"
	"storepay/gateway/iso8583"
)

// simBank is one acquirer: the real bank simulator (gateway/banksim,
// which follows acquirer-protocol.md) served in-process, behind faults
// the seed draws. Its ledger is the truth the run is checked against.
type simBank struct {
	name   string
	iso    bool // an ISO 8583 switch
	apiKey string
	sim    *banksim.Sim
	urls   []string
	h      map[string]http.Handler
	mode   faultMode
	// kept holds the keys whose 500 the bank kept as their answer (the
	// error_after_apply fault): every repeat under them replays it.
	kept map[string]bool
	// switches are an ISO 8583 bank's URLs, served in-process.
	switches map[string]func(iso8583.Fields) iso8583.Fields
}

// faultMode is what a bank does now.
type faultMode int

const (
	modeUp           faultMode = iota
	modeRefuse                 // connection refused: nothing sent
	modeNotProcessed           // 503 not_processed: nothing done
	modeUnauthorized           // 401: a wrong API key
	modeRateLimited            // 429 with Retry-After
	modeBlackhole              // sent, never answered, nothing done
	modeFlaky                  // answers, but often applies and loses the answer
	modeKeepsErrors            // applies, answers 500 and keeps the 500 as the key's answer
	modeLookupsFail            // everything works but lookups (500)
	numModes
)

func (m faultMode) String() string {
	return [...]string{"up", "refusing", "503 not_processed", "401", "429", "blackholed", "flaky",
		"keeping 500s", "failing lookups"}[m]
}

func newBank(w *world, name string, urls int, iso bool) *simBank {
	b := &simBank{name: name, iso: iso, apiKey: "sk_" + name, h: map[string]http.Handler{}, kept: map[string]bool{},
		switches: map[string]func(iso8583.Fields) iso8583.Fields{}}
	b.sim = banksim.New(banksim.Config{APIKey: b.apiKey, Now: w.now, Rand: func() string { return w.text(26) }})
	for i := 0; i < urls; i++ {
		if iso {
			u := fmt.Sprintf("tcp://%s-%d.sim:9301", name, i+1)
			b.urls = append(b.urls, u)
			b.switches[u] = b.sim.ISO8583Exchange(u)
			continue
		}
		u := fmt.Sprintf("http://%s-%d.sim", name, i+1)
		b.urls = append(b.urls, u)
		b.h[u] = b.sim.Handler(u)
	}
	return b
}

// transport is how one incarnation of storepay reaches the banks: the
// http.RoundTripper of the real acquirer-json client. It parks the
// calling actor before the request leaves and after the bank answered,
// so the world can change in between (another terminal, a crash, a
// fault), and applies the bank's fault.
type transport struct {
	w    *world
	inc  *incarnation
	bank *simBank
}

// errNoAnswer is an attempt that ran out of time after the request was
// sent (a blackhole, a slow bank): outcome unknown. It is the network's
// deadline, not the call's context, as when storepay's own attempt
// timeout fires.
var errNoAnswer = &net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}

// sendTimeout is how long, in the world's time, a request may wait to
// leave or an answer to arrive: what storepay's real deadlines (attempt
// timeouts, payment budgets; an hour of wall clock in the simulator, so
// that they never fire by the wall clock) would allow.
const sendTimeout = 20 * time.Second

// callBudget is how long, in the world's time, one bank call (its
// attempts and repeats at every URL and bank) may go on: the payment
// budget storepay's contexts enforce in wall-clock time.
const callBudget = 25 * time.Second

// spent reports whether the running actor's bank call, first tried at
// first, is past its budget. A terminal request's calls share one budget,
// from its first send: storepay's request context bounds them all, the
// reversal that resolves an unknown answer included, so that a request
// never acts on a payment after the resolver may have taken it over. A
// worker's pass gives each payment its own context: its calls are bounded
// one by one.
func (w *world) spent(first time.Time) bool {
	if a := w.sched.cur; a != nil && a.request {
		if a.firstSend.IsZero() {
			a.firstSend = first
		}
		first = a.firstSend
	}
	return w.now().Sub(first) > callBudget
}

// errLate is a request whose deadline passed before it was written.
var errLate = &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}

// errRefused looks like a refused connection to the client: nothing sent.
var errRefused = &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	w, b := t.w, t.bank
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
	}
	what := req.Method + " " + b.name + req.URL.Path
	if a := w.sched.cur; a != nil {
		what = a.name + ": " + what
	}
	parked := w.now()
	if a := w.sched.cur; a != nil && a.inc == t.inc && !t.inc.dead.Load() {
		w.sched.park(a, "about to send "+what)
	}
	if t.inc.dead.Load() {
		return nil, errRefused // the process is gone: nothing leaves
	}
	call := req.Header.Get("Idempotency-Key") + " " + b.name + " " + req.URL.RequestURI()
	if a := w.sched.cur; a != nil {
		call = fmt.Sprint(a.id) + " " + call
	}
	first, ok := w.calls[call]
	if !ok {
		first, w.calls[call] = parked, parked
	}
	if w.spent(first) {
		// Repeats of one call (same actor, same key) stop when its
		// budget is spent, as storepay's context deadlines stop them.
		w.logf("%s: not sent, the call's budget is spent", what)
		return nil, errLate
	}
	if w.now().Sub(parked) > sendTimeout {
		// It waited longer than any of storepay's deadlines would let a
		// request wait before it leaves: its deadline passed unsent.
		w.logf("%s: not sent, its deadline passed", what)
		return nil, errLate
	}
	if err := req.Context().Err(); err != nil {
		return nil, err // cancelled while it waited (an emergency stop): never sent
	}
	lookup := req.Method == http.MethodGet && req.URL.Path == "/v1/authorizations"
	mode := b.mode
	if mode == modeLookupsFail && !lookup {
		mode = modeUp
	}
	if mode == modeRefuse {
		w.logf("%s: refused", what)
		return nil, errRefused
	}
	wrote(req)
	key := req.Header.Get("Idempotency-Key")
	keep := mode == modeKeepsErrors && req.Method == http.MethodPost
	var res *http.Response
	var err error
	switch {
	case mode == modeNotProcessed:
		res = bankAnswer(req, http.StatusServiceUnavailable, `{"code":"not_processed","message":"maintenance"}`, "")
	case mode == modeUnauthorized:
		res = bankAnswer(req, http.StatusUnauthorized, `{"code":"unauthorized","message":"bad key"}`, "")
	case mode == modeRateLimited:
		res = bankAnswer(req, http.StatusTooManyRequests, `{"code":"rate_limited","message":"slow down"}`, strconv.Itoa(1+w.intn(30)))
	case mode == modeBlackhole:
		err = errNoAnswer
	case mode == modeLookupsFail:
		res = bankAnswer(req, http.StatusInternalServerError, `{"code":"internal_error","message":"lookups are down"}`, "")
	case key != "" && b.kept[keyOf(b, key)]:
		res = bankAnswer(req, http.StatusInternalServerError, `{"code":"internal_error","message":"internal error"}`, "")
	default:
		rec := httptest.NewRecorder()
		hreq := req.Clone(context.Background())
		hreq.Body = io.NopCloser(bytes.NewReader(body))
		hreq.RequestURI = req.URL.RequestURI()
		b.h[schemeHost(req)].ServeHTTP(rec, hreq)
		res = rec.Result()
		res.Request = req
		switch {
		case keep && res.StatusCode == http.StatusOK:
			b.kept[keyOf(b, key)] = true
			res = bankAnswer(req, http.StatusInternalServerError, `{"code":"internal_error","message":"internal error"}`, "")
			w.logf("%s: applied, answered 500 and kept it (key %s)", what, key)
		case mode == modeFlaky && req.Method == http.MethodPost && w.chance(0.5):
			lost := []error{io.ErrUnexpectedEOF, errNoAnswer, syscall.ECONNRESET}[w.intn(3)]
			if w.chance(0.3) {
				res = bankAnswer(req, http.StatusInternalServerError, `{"code":"internal_error","message":"internal error"}`, "")
				w.logf("%s: applied (HTTP %d), answered 500", what, rec.Code)
			} else {
				res, err = nil, lost
				w.logf("%s: applied (HTTP %d), answer lost: %v", what, rec.Code, lost)
			}
		}
	}
	if res != nil && err == nil {
		w.logf("%s (key %s): HTTP %d", what, key, res.StatusCode)
	}
	answered := w.now()
	if a := w.sched.cur; a != nil && a.inc == t.inc && !t.inc.dead.Load() {
		w.sched.park(a, "answer on its way from "+what)
	}
	if t.inc.dead.Load() {
		return nil, syscall.ECONNRESET // it died waiting: the answer is lost
	}
	if w.now().Sub(answered) > sendTimeout {
		w.logf("%s: the answer came after the attempt's deadline", what)
		return nil, errNoAnswer
	}
	return res, err
}

// keyOf names a key at a bank.
func keyOf(b *simBank, key string) string {
	h := sha256.Sum256([]byte(b.name + "\x00" + key))
	return string(h[:8])
}

func schemeHost(req *http.Request) string { return req.URL.Scheme + "://" + req.URL.Host }

// wrote tells the client's trace that the request went out: from here
// on, a failure is an unknown outcome.
func wrote(req *http.Request) {
	if tr := httptrace.ContextClientTrace(req.Context()); tr != nil {
		if tr.WroteHeaders != nil {
			tr.WroteHeaders()
		}
		if tr.WroteRequest != nil {
			tr.WroteRequest(httptrace.WroteRequestInfo{})
		}
	}
}

func bankAnswer(req *http.Request, status int, body, retryAfter string) *http.Response {
	h := http.Header{"Content-Type": {"application/json"}}
	if retryAfter != "" {
		h.Set("Retry-After", retryAfter)
	}
	return &http.Response{StatusCode: status, Status: strconv.Itoa(status) + " " + http.StatusText(status),
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: h, Body: io.NopCloser(strings.NewReader(body)),
		ContentLength: int64(len(body)), Request: req}
}

// isoTransport is how one incarnation reaches an ISO 8583 switch: the
// in-process transport of the real iso8583 client, with the same parking
// points, deadlines and faults as the HTTP transport. The switch is the
// real bank simulator's, served without a socket.
type isoTransport struct {
	w       *world
	inc     *incarnation
	bank    *simBank
	url     string
	switch_ func(iso8583.Fields) iso8583.Fields
}

func (t *isoTransport) exchange(ctx context.Context, req iso8583.Fields) (iso8583.Fields, error) {
	w, b := t.w, t.bank
	fail := func(kind gateway.Kind, err error) error {
		return &gateway.Error{Kind: kind, Gateway: b.name, URL: t.url, Err: err}
	}
	what := req.MTI + " " + b.name + " rrn " + req.RRN
	if a := w.sched.cur; a != nil {
		what = a.name + ": " + what
	}
	parked := w.now()
	if a := w.sched.cur; a != nil && a.inc == t.inc && !t.inc.dead.Load() {
		w.sched.park(a, "about to send "+what)
	}
	if t.inc.dead.Load() {
		return iso8583.Fields{}, fail(gateway.KindNotSent, errRefused)
	}
	if err := ctx.Err(); err != nil {
		return iso8583.Fields{}, fail(gateway.KindNotSent, err)
	}
	call := req.RRN + " " + req.MTI + " " + b.name
	if a := w.sched.cur; a != nil {
		call = fmt.Sprint(a.id) + " " + call
	}
	first, ok := w.calls[call]
	if !ok {
		first, w.calls[call] = parked, parked
	}
	if w.spent(first) {
		w.logf("%s: not sent, the call's budget is spent", what)
		return iso8583.Fields{}, fail(gateway.KindNotSent, errLate)
	}
	if w.now().Sub(parked) > sendTimeout {
		w.logf("%s: not sent, its deadline passed", what)
		return iso8583.Fields{}, fail(gateway.KindNotSent, errLate)
	}
	var ans iso8583.Fields
	var err error
	switch b.mode {
	case modeRefuse:
		w.logf("%s: refused", what)
		return iso8583.Fields{}, fail(gateway.KindNotSent, errRefused)
	case modeNotProcessed:
		ans = isoCode(req, iso8583.CodeUnavailable)
	case modeUnauthorized:
		ans = isoCode(req, iso8583.CodeInvalidMerchant)
	case modeBlackhole:
		err = fail(gateway.KindUnknown, errNoAnswer)
	case modeKeepsErrors:
		t.switch_(req)
		ans = isoCode(req, iso8583.CodeMalfunction)
		w.logf("%s: applied, answered 96", what)
	default: // up, and the faults that do not apply to ISO 8583 (429, lookups)
		ans = t.switch_(req)
		if b.mode == modeFlaky && req.MTI != iso8583.MTINetwork && w.chance(0.5) {
			if w.chance(0.3) {
				w.logf("%s: applied (%s), answered 96", what, ans.ResponseCode)
				ans = isoCode(req, iso8583.CodeMalfunction)
			} else {
				w.logf("%s: applied (%s), answer lost", what, ans.ResponseCode)
				ans, err = iso8583.Fields{}, fail(gateway.KindUnknown, errNoAnswer)
			}
		}
	}
	if err == nil && req.MTI != iso8583.MTINetwork {
		w.logf("%s: %s", what, ans.ResponseCode)
	}
	answered := w.now()
	if a := w.sched.cur; a != nil && a.inc == t.inc && !t.inc.dead.Load() {
		w.sched.park(a, "answer on its way from "+what)
	}
	if t.inc.dead.Load() {
		return iso8583.Fields{}, fail(gateway.KindUnknown, syscall.ECONNRESET)
	}
	if w.now().Sub(answered) > sendTimeout {
		w.logf("%s: the answer came after the attempt's deadline", what)
		return iso8583.Fields{}, fail(gateway.KindUnknown, errNoAnswer)
	}
	return ans, err
}

// isoCode is a switch's answer to req with a response code and no work.
func isoCode(req iso8583.Fields, code string) iso8583.Fields {
	return iso8583.Fields{MTI: iso8583.ResponseMTI(req.MTI), ProcessingCode: req.ProcessingCode, Amount: req.Amount,
		TransmissionTime: req.TransmissionTime, STAN: req.STAN, RRN: req.RRN, TerminalID: req.TerminalID, ResponseCode: code}
}
