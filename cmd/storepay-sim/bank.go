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

	"storepay/gateway/banksim"
)

// simBank is one acquirer: the real bank simulator (gateway/banksim,
// which follows acquirer-protocol.md) served in-process, behind faults
// the seed draws. Its ledger is the truth the run is checked against.
type simBank struct {
	name   string
	apiKey string
	sim    *banksim.Sim
	urls   []string
	h      map[string]http.Handler
	mode   faultMode
	// kept holds the keys whose 500 the bank kept as their answer (the
	// error_after_apply fault): every repeat under them replays it.
	kept map[string]bool
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

func newBank(w *world, name string, urls int) *simBank {
	b := &simBank{name: name, apiKey: "sk_" + name, h: map[string]http.Handler{}, kept: map[string]bool{}}
	b.sim = banksim.New(banksim.Config{APIKey: b.apiKey, Now: w.now, Rand: func() string { return w.text(26) }})
	for i := 0; i < urls; i++ {
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
	if first, ok := w.calls[call]; !ok {
		w.calls[call] = parked
	} else if w.now().Sub(first) > callBudget {
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
