package banksim

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The protocol's endpoints, as counted in [Ledger.Requests].
const (
	EndpointHealth             = "GET /v1/health"
	EndpointAuthorize          = "POST /v1/authorizations"
	EndpointFind               = "GET /v1/authorizations"
	EndpointCapture            = "POST /v1/authorizations/{id}/captures"
	EndpointReverse            = "POST /v1/authorizations/{id}/reversals"
	EndpointReverseByReference = "POST /v1/reversals"
	EndpointRefund             = "POST /v1/refunds"
	EndpointSettlement         = "GET /v1/settlements/{date}"
	// EndpointOther counts requests to no endpoint of the protocol.
	EndpointOther = "other"
)

// endpoint is one route of the protocol: its ServeMux pattern (also its
// counter name) and the work it does.
type endpoint struct {
	pattern string
	post    bool
	serve   func(s *Sim, c *call) answer
}

// numEndpoints is len(endpoints), spelled out because Sim's counters
// depend on it.
const numEndpoints = 8

var endpoints = [numEndpoints]endpoint{
	{EndpointHealth, false, (*Sim).health},
	{EndpointAuthorize, true, (*Sim).authorize},
	{EndpointFind, false, (*Sim).find},
	{EndpointCapture, true, (*Sim).capture},
	{EndpointReverse, true, (*Sim).reverse},
	{EndpointReverseByReference, true, (*Sim).reverseByReference},
	{EndpointRefund, true, (*Sim).refund},
	{EndpointSettlement, false, (*Sim).settlement},
}

// Indexes of endpoints the pipeline treats specially.
const (
	epHealth    = 0
	epAuthorize = 1
)

func endpointName(i int) string {
	if i < numEndpoints {
		return endpoints[i].pattern
	}
	return EndpointOther
}

// maxRequestBody bounds request bodies; an authorization is ~300 bytes.
const maxRequestBody = 64 << 10

// call is one request that reached an endpoint's work.
type call struct {
	r      *http.Request
	apiKey string
	key    string // Idempotency-Key of a POST
	body   []byte
}

// answer is what an endpoint answers. It is what the idempotency store
// keeps and replays.
type answer struct {
	status      int
	contentType string
	body        []byte
	retryAfter  time.Duration // a 429's Retry-After
	authIDs     []string      // authorizations created or changed, for lookups by key
}

// apiError is the protocol's error body.
type apiError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func errorAnswer(status int, code, msg string) answer {
	return jsonAnswer(status, apiError{Code: code, Message: msg})
}

func jsonAnswer(status int, v any) answer {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"code":"internal_error","message":"encode answer"}`)
	}
	return answer{status: status, contentType: "application/json", body: append(body, '\n')}
}

// protocolHandler routes one listener's requests.
func (s *Sim) protocolHandler(l *listener) http.Handler {
	mux := http.NewServeMux()
	for i := range endpoints {
		mux.Handle(endpoints[i].pattern, s.endpointHandler(l, i))
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		l.calls[numEndpoints].Add(1)
		s.write(w, errorAnswer(http.StatusNotFound, "not_found", "no such endpoint"), false)
	})
	return mux
}

// endpointHandler runs every request of endpoint ep at listener l through
// the same steps: count it, read it, meet the faults, check the API key,
// then (for a POST) take its idempotency key, do the work once and record
// the answer.
func (s *Sim) endpointHandler(l *listener, ep int) http.HandlerFunc {
	e := endpoints[ep]
	return func(w http.ResponseWriter, r *http.Request) {
		l.calls[ep].Add(1)
		// Read the body first: until it is read to the end, net/http
		// does not notice a client that hangs up.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
		d := s.decide(l.url, ep == epHealth)
		if len(d.blackhole) > 0 && !s.hold(r.Context(), l.url, d.blackhole) {
			panic(http.ErrAbortHandler) // close the connection, answer nothing
		}
		log := s.log.With("url", l.url, "endpoint", e.pattern)

		apiKey, ok := s.authenticate(r)
		var early answer
		switch {
		case d.unauthorized || !ok:
			early = errorAnswer(http.StatusUnauthorized, "unauthorized", "missing or unknown API key")
		case d.rateLimited:
			early = errorAnswer(http.StatusTooManyRequests, "rate_limited", "too many requests")
			early.retryAfter = d.retryAfter
		case d.notProcessed:
			early = errorAnswer(http.StatusServiceUnavailable, "not_processed", "the bank is not accepting work, nothing was done")
		case d.serverError:
			early = errorAnswer(http.StatusInternalServerError, "internal_error", "internal error")
		case err != nil:
			early = errorAnswer(http.StatusBadRequest, "invalid_request", "request body too large or unreadable")
		}
		if early.status != 0 {
			s.delay(l.url, d.delay, d.latency)
			s.finish(w, log, early, false, d.drop)
			return
		}

		c := &call{r: r, apiKey: apiKey, body: body}
		if !e.post {
			s.delay(l.url, d.delay, d.latency)
			s.finish(w, log, e.serve(s, c), false, d.drop)
			return
		}

		header := r.Header.Get("Idempotency-Key")
		if header == "" {
			s.finish(w, log, errorAnswer(http.StatusBadRequest, "missing_idempotency_key", "the Idempotency-Key header is required"), false, d.drop)
			return
		}
		key, ok := parseKey(header)
		if !ok {
			s.finish(w, log, errorAnswer(http.StatusBadRequest, "invalid_idempotency_key", "the Idempotency-Key must be 1 to 255 printable ASCII characters"), false, d.drop)
			return
		}
		c.key = key
		var reference string
		if ep == epAuthorize {
			reference = peekReference(body)
		}
		now := s.now()
		entry, claim := s.idem.claim(apiKey, key, fingerprint(r.Method, r.URL.Path, body), reference, now, now.Add(-s.cfg.KeyTTL))
		if claim == claimNew && d.afterWork {
			a := s.work(c, e, entry, d.failAfter)
			s.delay(l.url, d.delay, d.latency)
			s.finish(w, log, a, false, d.drop)
			return
		}
		s.delay(l.url, d.delay, d.latency)
		switch claim {
		case claimReplay:
			s.finish(w, log, entry.answer, true, d.drop)
		case claimReuse:
			s.finish(w, log, errorAnswer(http.StatusUnprocessableEntity, "idempotency_key_reuse", "this Idempotency-Key was used with another request"), false, d.drop)
		case claimInUse:
			s.finish(w, log, errorAnswer(http.StatusConflict, "idempotency_key_in_use", "a request with this Idempotency-Key is still being processed"), false, d.drop)
		case claimNew:
			a := s.work(c, e, entry, d.failAfter)
			s.finish(w, log, a, false, d.drop)
		}
	}
}

// work does a claimed request once and records its answer (with fail, a
// 500 instead of the work's answer); if the work panics the key is
// released so that a retry can do it.
func (s *Sim) work(c *call, e endpoint, entry *idemEntry, fail bool) answer {
	done := false
	defer func() {
		if !done {
			s.idem.release(c.apiKey, c.key, entry)
		}
	}()
	a := e.serve(s, c)
	if fail {
		a = errorAnswer(http.StatusInternalServerError, "internal_error", "internal error")
	}
	s.idem.complete(c.apiKey, entry, a)
	done = true
	return a
}

// finish sends a, or with drop closes the connection unanswered.
func (s *Sim) finish(w http.ResponseWriter, log *slog.Logger, a answer, replayed, drop bool) {
	if drop {
		log.Debug("banksim dropping the connection after the work", "status", a.status)
		dropConnection(w)
		return
	}
	log.Debug("banksim answer", "status", a.status, "replayed", replayed)
	s.write(w, a, replayed)
}

func (s *Sim) write(w http.ResponseWriter, a answer, replayed bool) {
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("Content-Length", strconv.Itoa(len(a.body)))
	if replayed {
		h.Set("Idempotent-Replayed", "true")
	}
	if a.status == http.StatusTooManyRequests && a.retryAfter > 0 {
		secs := (a.retryAfter + time.Second - 1) / time.Second
		h.Set("Retry-After", strconv.FormatInt(int64(secs), 10))
	}
	w.WriteHeader(a.status)
	_, _ = w.Write(a.body)
}

// dropConnection hijacks the connection and resets it, so the client sees
// its request written and no answer.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0) // RST rather than FIN
	}
	_ = conn.Close()
}

// authenticate returns the request's API key if the bank knows it.
func (s *Sim) authenticate(r *http.Request) (string, bool) {
	scheme, key, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	key = strings.TrimSpace(key)
	return key, s.keys[key]
}

// peekReference reads the reference of an authorization body without
// validating it, to mark the reference in flight.
func peekReference(body []byte) string {
	var v struct {
		Reference string `json:"reference"`
	}
	if json.Unmarshal(body, &v) != nil {
		return ""
	}
	return v.Reference
}
