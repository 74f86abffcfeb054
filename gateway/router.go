package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/failsafe-go/failsafe-go"
	"github.com/failsafe-go/failsafe-go/bulkhead"
	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/ratelimiter"
	"github.com/failsafe-go/failsafe-go/retrypolicy"
	"github.com/failsafe-go/failsafe-go/timeout"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// BankSpec configures one bank of the router.
type BankSpec struct {
	Name string
	// Endpoints are the bank's failover URLs, tried in turn.
	Endpoints []Endpoint
	Policy    Policy
}

// Router sends each call to a bank: authorizations to the first bank, in
// priority order, whose breaker admits them; every other call to the bank
// that holds the payment. Each bank sits behind its own failsafe-go
// policies, composed per call as
//
//	bulkhead → rate limit → Retry(CircuitBreaker(Timeout(attempt)))
//
// The bulkhead and the rate limit come first so that a bank at its limit
// sends an authorization to the next bank at once instead of queueing it.
// The retry is outside the breaker so that every attempt counts towards
// the bank's failure rate and a breaker that opens mid-call stops the
// retries; the timeout is innermost, per attempt, and reaches the adapter
// through the attempt's context.
//
// Retries reuse the request's idempotency key and rotate through the
// bank's URLs. A call moves to the next bank only when the bank provably
// did nothing; once any attempt's outcome is unknown, only an answer from
// the same bank ends the call, and failing that the call returns
// KindUnknown pinned to that bank.
type Router struct {
	banks  []*bank
	byName map[string]*bank
	log    *slog.Logger
	// Now is the router's clock for the pauses banks ask for (a 429's
	// Retry-After). Nil: time.Now. The breakers keep failsafe-go's own
	// wall clock.
	Now func() time.Time

	mu       sync.Mutex
	watchers []func(bank string)
	changes  []func(bank, from, to string)

	cancel     context.CancelFunc
	wg         sync.WaitGroup
	unregister func() error
}

var _ interface {
	Authorize(context.Context, AuthRequest, string, func(string) error) (Authorization, string, error)
} = (*Router)(nil)

// NewRouter builds a router over banks, in priority order.
func NewRouter(banks []BankSpec, log *slog.Logger) (*Router, error) {
	if log == nil {
		log = slog.Default()
	}
	r := &Router{byName: map[string]*bank{}, log: log}
	for _, spec := range banks {
		if spec.Name == "" || len(spec.Endpoints) == 0 {
			return nil, fmt.Errorf("bank %q: a name and at least one endpoint are required", spec.Name)
		}
		if r.byName[spec.Name] != nil {
			return nil, fmt.Errorf("bank %q configured twice", spec.Name)
		}
		b := newBank(spec, r)
		r.banks = append(r.banks, b)
		r.byName[spec.Name] = b
	}
	reg, err := meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		for _, b := range r.banks {
			st := b.state()
			for _, name := range []string{"closed", "open", "half_open", "disabled"} {
				v := int64(0)
				if name == st {
					v = 1
				}
				o.ObserveInt64(breakerState, v, metric.WithAttributes(attribute.String("gateway", b.name), attribute.String("state", name)))
			}
		}
		return nil
	}, breakerState)
	if err != nil {
		return nil, fmt.Errorf("gateway metrics: %w", err)
	}
	r.unregister = reg.Unregister
	return r, nil
}

func (r *Router) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// ProbeOnce probes every bank whose probes are on, once, now: the health
// prober's step, for tests and the simulator that drive time themselves.
func (r *Router) ProbeOnce(ctx context.Context) {
	for _, b := range r.banks {
		if b.pol.ProbeInterval >= 0 && !b.disabled.Load() {
			b.probe(ctx)
		}
	}
}

// Start starts the health probes. Close stops them.
func (r *Router) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	for _, b := range r.banks {
		if b.pol.ProbeInterval < 0 {
			continue
		}
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			b.probeLoop(ctx)
		}()
	}
}

// Close stops the health probes and waits for them.
func (r *Router) Close() {
	if r.cancel != nil {
		r.cancel()
	}
	r.wg.Wait()
	if r.unregister != nil {
		r.unregister()
	}
}

// OnAvailable registers fn to be called (in its own goroutine) whenever a
// bank starts admitting traffic again: its breaker half-opens or closes,
// or a manager enables it. Store-and-forward uses it to resume at once.
func (r *Router) OnAvailable(fn func(bank string)) {
	r.mu.Lock()
	r.watchers = append(r.watchers, fn)
	r.mu.Unlock()
}

func (r *Router) notifyAvailable(name string) {
	r.mu.Lock()
	ws := append([]func(string){}, r.watchers...)
	r.mu.Unlock()
	for _, fn := range ws {
		go fn(name)
	}
}

// OnStateChange registers fn to be called, synchronously and quickly,
// whenever a bank's state changes (closed, open, half_open): its circuit
// breaker's, or the health probes' gate on new payments (failing probes
// are "open", their recovery "closed"). The SLO recorder keeps these
// durably, because the router itself forgets them.
func (r *Router) OnStateChange(fn func(bank, from, to string)) {
	r.mu.Lock()
	r.changes = append(r.changes, fn)
	r.mu.Unlock()
}

func (r *Router) notifyChange(name, from, to string) {
	// Counted here, not in the breaker's listener: the probes' gate
	// changes the bank's state too (see bank.state), and a bank whose
	// probes failed before any payment tripped its breaker showed "open"
	// with no transition in /metrics (chaos TestPrimaryDownThenBack, on a
	// loaded machine).
	breakerTransitions.Add(context.Background(), 1, metric.WithAttributes(
		attribute.String("gateway", name), attribute.String("to", to)))
	r.mu.Lock()
	cs := append([]func(string, string, string){}, r.changes...)
	r.mu.Unlock()
	for _, fn := range cs {
		fn(name, from, to)
	}
}

// Banks returns the configured bank names in priority order.
func (r *Router) Banks() []string {
	out := make([]string, len(r.banks))
	for i, b := range r.banks {
		out[i] = b.name
	}
	return out
}

// Preferred returns the bank an authorization would go to now, or "" when
// no bank admits traffic.
func (r *Router) Preferred() string {
	for _, b := range r.banks {
		if b.admits() {
			return b.name
		}
	}
	return ""
}

// Authorize sends req to the first bank that admits it. See
// orders.Bank for the pin contract.
func (r *Router) Authorize(ctx context.Context, req AuthRequest, pinned string, pin func(bank string) error) (Authorization, string, error) {
	var lastErr error = &Error{Kind: KindUnavailable, Err: errors.New("no bank is configured")}
	var tried []string
	for _, b := range r.banks {
		if why := b.takesNewPayments(); why != "" {
			lastErr = b.unavailable(why)
			continue
		}
		if b.name != pinned && pin != nil {
			if err := pin(b.name); err != nil {
				return Authorization{}, "", &Error{Kind: KindUnavailable, Gateway: b.name, Err: fmt.Errorf("record bank before calling it: %w", err)}
			}
			pinned = b.name
		}
		res, err := b.call(ctx, "authorize", true, func(ctx context.Context, ep Endpoint) (any, error) {
			return ep.Authorize(ctx, req)
		})
		if err == nil {
			if len(tried) > 0 {
				failovers.Add(ctx, 1, metric.WithAttributes(attribute.String("from", tried[0]), attribute.String("to", b.name)))
			}
			return res.(Authorization), b.name, nil
		}
		if e := AsError(err); e != nil && e.Kind == KindUnknown && b.reverser() != nil {
			// A protocol without lookup (ISO 8583) resolves the unknown
			// outcome at once by a reversal advice; acknowledged, the bank
			// holds nothing of the payment and it may go to the next bank.
			if rerr := b.resolveUnknown(ctx, req); rerr == nil {
				r.log.WarnContext(ctx, "outcome unknown, reversal acknowledged: failing over", "gateway", b.name, "reference", req.Reference, "err", err)
				reversedFailovers.Add(ctx, 1, metric.WithAttributes(attribute.String("gateway", b.name)))
				tried = append(tried, b.name)
				lastErr = &Error{Kind: KindUnavailable, Gateway: b.name, Err: fmt.Errorf("outcome unknown, then reversed: %w", err)}
				continue
			} else {
				r.log.WarnContext(ctx, "outcome unknown and its reversal not acknowledged: the payment stays with the bank", "gateway", b.name,
					"reference", req.Reference, "err", rerr)
			}
		}
		if e := AsError(err); e == nil || !e.NothingDone() || e.Kind == KindRejected {
			return Authorization{}, b.name, err
		}
		r.log.WarnContext(ctx, "bank did nothing, failing over", "gateway", b.name, "reference", req.Reference, "err", err)
		tried = append(tried, b.name)
		lastErr = err
	}
	return Authorization{}, "", lastErr
}

func (r *Router) pinned(name string) (*bank, error) {
	b := r.byName[name]
	if b == nil {
		return nil, &Error{Kind: KindUnavailable, Gateway: name, Err: errors.New("no such bank is configured")}
	}
	return b, nil
}

// AuthorizeAt repeats an authorization at one bank with the same key.
func (r *Router) AuthorizeAt(ctx context.Context, name string, req AuthRequest) (Authorization, error) {
	res, err := r.at(ctx, name, "authorize", func(ctx context.Context, ep Endpoint) (any, error) { return ep.Authorize(ctx, req) })
	if err != nil {
		return Authorization{}, err
	}
	return res.(Authorization), nil
}

// Capture captures an authorization at the bank that holds it.
func (r *Router) Capture(ctx context.Context, name string, req CaptureRequest) (Authorization, error) {
	res, err := r.at(ctx, name, "capture", func(ctx context.Context, ep Endpoint) (any, error) { return ep.Capture(ctx, req) })
	if err != nil {
		return Authorization{}, err
	}
	return res.(Authorization), nil
}

// Reverse reverses an authorization at the bank that holds it.
func (r *Router) Reverse(ctx context.Context, name string, req ReverseRequest) ([]Authorization, error) {
	res, err := r.at(ctx, name, "reverse", func(ctx context.Context, ep Endpoint) (any, error) { return ep.Reverse(ctx, req) })
	if err != nil {
		return nil, err
	}
	return res.([]Authorization), nil
}

// Refund refunds at the bank that holds the authorization.
func (r *Router) Refund(ctx context.Context, name string, req RefundRequest) (Refund, error) {
	res, err := r.at(ctx, name, "refund", func(ctx context.Context, ep Endpoint) (any, error) { return ep.Refund(ctx, req) })
	if err != nil {
		return Refund{}, err
	}
	return res.(Refund), nil
}

// Find looks up what a bank holds under a reference or key.
func (r *Router) Find(ctx context.Context, name string, by Lookup) ([]Authorization, error) {
	res, err := r.at(ctx, name, "lookup", func(ctx context.Context, ep Endpoint) (any, error) { return ep.Find(ctx, by) })
	if err != nil {
		return nil, err
	}
	return res.([]Authorization), nil
}

// Settlement fetches a bank's settlement report for a business date.
func (r *Router) Settlement(ctx context.Context, name, date string) ([]byte, error) {
	res, err := r.at(ctx, name, "settlement", func(ctx context.Context, ep Endpoint) (any, error) { return ep.Settlement(ctx, date) })
	if err != nil {
		return nil, err
	}
	return res.([]byte), nil
}

func (r *Router) at(ctx context.Context, name, op string, fn func(context.Context, Endpoint) (any, error)) (any, error) {
	b, err := r.pinned(name)
	if err != nil {
		return nil, err
	}
	// A call tied to this bank (a pinned retry, a capture, a reversal)
	// honours a 401 and a 429's Retry-After like a new authorization:
	// nothing is sent, and the caller tries again later.
	if why := b.refuses(); why != "" {
		e := b.unavailable(why)
		if !b.disabled.Load() {
			// When it takes calls again: after a 429's pause, or when
			// the breaker lets a trial through.
			e.RetryAfter = max(time.Unix(0, b.coolUntil.Load()).Sub(r.now()), b.breaker.RemainingDelay())
		}
		return nil, e
	}
	return b.call(ctx, op, false, fn)
}

// reverser returns the bank's endpoint that resolves unknown outcomes by
// a reversal advice, or nil when its protocol has a lookup.
func (b *bank) reverser() Reverser {
	for _, ep := range b.eps {
		if rv, ok := ep.(Reverser); ok {
			return rv
		}
	}
	return nil
}

// resolveUnknown sends the reversal advice of req at the bank under its
// policies (repeated, at every URL, within ctx's budget) and returns nil
// once the bank acknowledged it.
func (b *bank) resolveUnknown(ctx context.Context, req AuthRequest) error {
	_, err := b.call(ctx, "reverse_unknown", false, func(ctx context.Context, ep Endpoint) (any, error) {
		rv, ok := ep.(Reverser)
		if !ok {
			return nil, &Error{Kind: KindRejected, Gateway: b.name, Code: CodeNotSupported, Err: errors.New("no reversal advice")}
		}
		return nil, rv.ResolveUnknown(ctx, req)
	})
	return err
}

// DeliversAdvices reports whether bank's protocol delivers captures and
// reversals as advices, repeated until answered (ISO 8583).
func (r *Router) DeliversAdvices(name string) bool {
	b := r.byName[name]
	if b == nil {
		return false
	}
	for _, ep := range b.eps {
		if a, ok := ep.(Adviser); ok && a.DeliversAdvices() {
			return true
		}
	}
	return false
}

// bank is one bank with its policies and what the router has seen of it.
type bank struct {
	name     string
	eps      []Endpoint
	pol      Policy
	router   *Router
	breaker  circuitbreaker.CircuitBreaker[any]
	bulkhead bulkhead.Bulkhead[any]
	limiter  ratelimiter.RateLimiter[any] // nil: no cap
	timeout  timeout.Timeout[any]

	preferred atomic.Int32 // index of the URL that answered last
	disabled  atomic.Bool  // a 401: the API key is wrong
	coolUntil atomic.Int64 // unix nanos; a 429's Retry-After

	kick chan struct{} // asks the prober to look now

	mu          sync.Mutex
	lastErr     Explanation // told to a manager; the raw error is logged
	lastRaw     string
	lastErrAt   time.Time
	lastOK      time.Time // the last call the bank answered
	cond        string    // the condition status last saw, and since when
	condSince   time.Time
	halfOpenOK  int // healthy probes in a row while half-open and idle
	consecutive int
	outcomes    [100]bool // ring of recent attempt outcomes, true = answered
	nOutcomes   int

	// probeFails counts health probes failed in a row on every URL
	// (atomic: read under mu by status).
	probeFails atomic.Int32
}

func newBank(spec BankSpec, r *Router) *bank {
	pol := DefaultPolicy(spec.Policy)
	b := &bank{name: spec.Name, eps: spec.Endpoints, pol: pol, router: r, kick: make(chan struct{}, 1)}
	b.breaker = circuitbreaker.NewBuilder[any]().
		HandleIf(func(_ any, err error) bool { return bankFailure(err) }).
		WithFailureRateThreshold(pol.BreakerFailureRate, pol.BreakerMinCalls, pol.BreakerWindow).
		WithDelay(pol.BreakerDelay).
		WithSuccessThreshold(pol.BreakerSuccesses).
		OnStateChanged(func(e circuitbreaker.StateChangedEvent) {
			to := stateName(e.NewState)
			lvl := slog.LevelInfo
			if e.NewState == circuitbreaker.OpenState {
				lvl = slog.LevelWarn
			}
			r.log.Log(context.Background(), lvl, "circuit breaker changed state", "gateway", b.name,
				"from", stateName(e.OldState), "to", to)
			r.notifyChange(b.name, stateName(e.OldState), to)
			if e.NewState != circuitbreaker.OpenState {
				r.notifyAvailable(b.name)
			}
		}).
		Build()
	b.bulkhead = bulkhead.NewBuilder[any](uint(pol.MaxConcurrent)).Build()
	if pol.RatePerSecond > 0 {
		// A smooth limiter spaces calls evenly: N per second, no bursts.
		b.limiter = ratelimiter.NewSmoothBuilderWithMaxRate[any](time.Duration(float64(time.Second) / pol.RatePerSecond)).Build()
	}
	// The policy's timeout is the ceiling of the longest attempt; each
	// attempt sets its own, shorter or equal (see attempt).
	b.timeout = timeout.NewBuilder[any](pol.slowTimeout()).Build()
	return b
}

// bankFailure reports whether an attempt's error says the bank is
// unhealthy: no answer, or an answer that it could not do the work. A 4xx
// is the bank working; a 429 and a 401 are handled on their own.
func bankFailure(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, timeout.ErrExceeded) {
		return true
	}
	e := AsError(err)
	if e == nil {
		return !errors.Is(err, context.Canceled)
	}
	if keyInUse(e) {
		// The bank is busy with this very key (an earlier attempt still
		// running there): an answer, and no sign that the bank is sick.
		return false
	}
	switch e.Kind {
	case KindUnknown, KindNotSent, KindNotProcessed:
		return true
	}
	return false
}

// keyInUse reports a bank's answer that it is still processing the first
// request under the same key.
func keyInUse(e *Error) bool {
	return e.Status == http.StatusConflict && e.Code == "idempotency_key_in_use"
}

func stateName(s circuitbreaker.State) string {
	switch s {
	case circuitbreaker.OpenState:
		return "open"
	case circuitbreaker.HalfOpenState:
		return "half_open"
	}
	return "closed"
}

func (b *bank) unavailable(why string) *Error {
	return &Error{Kind: KindUnavailable, Gateway: b.name, Err: errors.New(why)}
}

// refuses says why the bank takes no new authorizations now, or "".
func (b *bank) refuses() string {
	switch {
	case b.disabled.Load():
		return "disabled after a 401 from the bank: check its API key"
	case b.router.now().UnixNano() < b.coolUntil.Load():
		return "the bank asked for a pause (429 Retry-After)"
	case b.breaker.IsOpen() && b.breaker.RemainingDelay() > 0:
		return "circuit breaker open"
	}
	return ""
}

// takesNewPayments says why the bank takes no new authorization now, or
// "": what refuses says, and also while its health probes keep failing.
// Its breaker's delay may be over, but no customer's payment is sent as a
// trial to a bank known to be down; a healthy probe lets traffic back.
// Calls tied to the bank (captures, reversals, repeats of a payment it
// may hold) are not held back by the probes: they can go nowhere else.
func (b *bank) takesNewPayments() string {
	if why := b.refuses(); why != "" {
		return why
	}
	if b.probesFailing() {
		return "health probes failing"
	}
	return ""
}

// probesFailing reports whether the last two health probes failed on
// every URL.
func (b *bank) probesFailing() bool { return b.probeFails.Load() >= 2 }

func (b *bank) admits() bool { return b.takesNewPayments() == "" }

// callState follows one call's attempts at one bank.
type callState struct {
	attempts    int
	sawUnknown  bool
	nothingDone int
	last        error // the last attempt's classified error
	// busy counts the answers "still processing this key" (409
	// idempotency_key_in_use). They are not attempts: the bank is
	// working on the first one, and asking again is how its answer is
	// heard. A call with a deadline waits for it as long as the deadline
	// lets; one without counts them as attempts, to end at all.
	busy     int
	waitBusy bool
	max      int // attempts, busy answers not counted
	// slow is set once an attempt ran out of time or found the bank busy
	// with the payment: the bank is slow, and the next attempts get the
	// longer timeout.
	slow bool
}

// call runs fn at the bank under its policies. canFailOver says the caller
// has another bank to go to: then a full bulkhead or rate limit, or every
// URL doing nothing, ends the call at once. Otherwise (a payment pinned
// here) it waits for a permit and retries up to MaxAttempts.
func (b *bank) call(ctx context.Context, op string, canFailOver bool, fn func(context.Context, Endpoint) (any, error)) (any, error) {
	if canFailOver {
		if !b.bulkhead.TryAcquirePermit() {
			return nil, b.unavailable("bulkhead full: too many calls in flight")
		}
		if b.limiter != nil && !b.limiter.TryAcquirePermit() {
			b.bulkhead.ReleasePermit()
			return nil, b.unavailable("rate limit reached")
		}
	} else {
		if err := b.bulkhead.AcquirePermit(ctx); err != nil {
			return nil, b.unavailable("bulkhead full: " + err.Error())
		}
		if b.limiter != nil {
			if err := b.limiter.AcquirePermit(ctx); err != nil {
				b.bulkhead.ReleasePermit()
				return nil, b.unavailable("rate limit: " + err.Error())
			}
		}
	}
	defer b.bulkhead.ReleasePermit()

	_, hasDeadline := ctx.Deadline()
	st := &callState{max: b.pol.MaxAttempts, waitBusy: hasDeadline}
	n := len(b.eps)
	retry := retrypolicy.NewBuilder[any]().
		HandleIf(func(_ any, err error) bool { return err != nil }).
		AbortIf(func(_ any, err error) bool { return st.abort(err, n, canFailOver) }).
		ReturnLastFailure().
		WithMaxAttempts(-1). // st.abort counts them: a busy answer is no attempt
		WithBackoff(b.pol.BackoffMin, b.pol.BackoffMax).
		WithJitterFactor(0.25).
		Build()
	start := int(b.preferred.Load())
	run := func(exec failsafe.Execution[any]) (any, error) {
		i := (start + st.attempts) % n
		st.attempts++
		return b.attempt(exec.Context(), op, i, st, fn)
	}
	res, err := failsafe.With[any](retry, b.breaker, b.timeout).WithContext(ctx).GetWithExecution(run)
	if errors.Is(err, circuitbreaker.ErrOpen) && st.sawUnknown && ctx.Err() == nil {
		// The breaker opened while this call's outcome at the bank is
		// unknown (a slow bank's timeouts open it as a dead bank's do).
		// It keeps new payments away; the repeats under this call's key
		// are no new traffic but how its answer is heard, and go on past
		// it, within the same limits.
		res, err = failsafe.With[any](retry, b.timeout).WithContext(ctx).GetWithExecution(run)
	}
	return res, b.finish(ctx, st, res, err)
}

// ErrGateClosed is the cause of a KindUnavailable error when a call's gate
// (see [WithGate]) refused it: nothing was sent.
var ErrGateClosed = errors.New("gate closed")

type gateKey struct{}

// WithGate returns a context whose bank calls ask gate right before every
// attempt, retries included; when gate returns an error the attempt is not
// made and the call ends with KindUnavailable (nothing was sent).
// Store-and-forward puts its emergency stop here.
func WithGate(ctx context.Context, gate func(context.Context) error) context.Context {
	return context.WithValue(ctx, gateKey{}, gate)
}

// attempt is one HTTP attempt at one URL, with its span and metrics.
func (b *bank) attempt(ctx context.Context, op string, i int, st *callState, fn func(context.Context, Endpoint) (any, error)) (any, error) {
	ep := b.eps[i]
	if gate, ok := ctx.Value(gateKey{}).(func(context.Context) error); ok {
		if err := gate(ctx); err != nil {
			err = &Error{Kind: KindUnavailable, Gateway: b.name, Err: fmt.Errorf("%w: %w", ErrGateClosed, err)}
			st.last = err
			return nil, err
		}
	}
	ctx, span := tracer.Start(ctx, "bank "+op, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.String("gateway", b.name), attribute.String("url", ep.URL()),
			attribute.Int("attempt", st.attempts)))
	defer span.End()
	// The first attempt gets AttemptTimeout, so that a URL that swallows
	// requests is left for the next one soon. Once an attempt ran out of
	// time (the bank may still be working on it) or the bank said it is
	// busy with it, the repeats under the same key get the slow timeout:
	// a bank that takes 8 s to answer is slow, not down, and its answer
	// is heard within the payment's budget.
	limit := b.pol.AttemptTimeout
	if st.slow {
		limit = b.pol.slowTimeout()
	}
	actx, cancel := context.WithTimeout(ctx, limit)
	t0 := time.Now()
	res, err := fn(actx, ep)
	elapsed := time.Since(t0)
	ownTimeout := err != nil && actx.Err() != nil && ctx.Err() == nil
	cancel()
	if ownTimeout {
		// The attempt's own limit, not the call's: the error must not
		// read as the call's deadline (which ends the call).
		kind := KindUnknown
		if e := AsError(err); e != nil && e.Kind == KindNotSent {
			kind = KindNotSent // it never left: nothing was done, and the bank is not slow
		} else {
			st.slow = true
		}
		err = &Error{Kind: kind, Gateway: b.name, URL: ep.URL(), Err: fmt.Errorf("no answer within %s", limit)}
	}
	if e := AsError(err); e != nil && keyInUse(e) {
		st.slow = true
	}
	if err != nil && AsError(err) == nil {
		// Anything unclassified is unknown: the safe side.
		err = &Error{Kind: KindUnknown, Gateway: b.name, URL: ep.URL(), Err: err}
	}
	outcome := "ok"
	if e := AsError(err); e != nil {
		if e.Gateway == "" {
			e.Gateway = b.name
		}
		outcome = e.Kind.String()
		span.SetStatus(codes.Error, e.Error())
		if e.Kind == KindUnknown {
			st.sawUnknown = true
		}
	}
	span.SetAttributes(attribute.String("outcome", outcome))
	st.last = err
	attrs := metric.WithAttributes(attribute.String("gateway", b.name), attribute.String("op", op), attribute.String("outcome", outcome))
	attempts.Add(ctx, 1, attrs)
	latency.Record(ctx, elapsed.Seconds(), metric.WithAttributes(attribute.String("gateway", b.name), attribute.String("op", op)))
	b.observe(ctx, i, err)
	if outcome == KindUnknown.String() || outcome == KindNotSent.String() {
		// A failed attempt asks the prober for a second opinion now, so
		// that a dead bank is taken out of rotation within seconds even
		// when its failures are slow timeouts.
		select {
		case b.kick <- struct{}{}:
		default:
		}
	}
	return res, err
}

// abort decides whether the retry policy stops after err.
func (st *callState) abort(err error, urls int, canFailOver bool) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, circuitbreaker.ErrOpen) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, ErrGateClosed) {
		return true
	}
	if e := AsError(err); e != nil && keyInUse(e) && st.waitBusy {
		st.busy++
		st.sawUnknown = true
		return false
	}
	if st.attempts-st.busy >= st.max {
		return true
	}
	if errors.Is(err, timeout.ErrExceeded) {
		if st.last == nil {
			// The attempt's answer came as its time ran out and was
			// dropped: the bank may have acted. Repeat here with the same
			// key; never move to another bank.
			st.sawUnknown = true
			return false
		}
		err = st.last
	}
	e := AsError(err)
	if e == nil {
		return false
	}
	switch e.Kind {
	case KindRejected, KindUnauthorized:
		return true
	case KindRateLimited:
		// The bank asked for a pause: honoured even when an earlier
		// attempt's outcome is unknown (it is then resolved later, at
		// this bank, once the pause is over).
		return true
	case KindNotSent, KindNotProcessed, KindUnavailable:
		st.nothingDone++
		return canFailOver && !st.sawUnknown && st.nothingDone >= urls
	}
	return false // unknown: repeat with the same key
}

// finish turns the policies' result into the call's classified error.
func (b *bank) finish(ctx context.Context, st *callState, res any, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, timeout.ErrExceeded) && st.last != nil {
		err = st.last
	}
	e := AsError(err)
	switch {
	case e != nil && e.Kind == KindRejected:
		return e // a definitive answer, even after an unknown attempt
	case e != nil && e.Kind == KindUnauthorized:
		b.disable(ctx, e)
	case e != nil && e.Kind == KindRateLimited:
		wait := min(max(e.RetryAfter, time.Second), b.pol.MaxRetryAfter)
		b.coolUntil.Store(b.router.now().Add(wait).UnixNano())
	}
	if st.sawUnknown {
		return &Error{Kind: KindUnknown, Gateway: b.name, Err: fmt.Errorf("outcome unknown after %d attempts: %w", st.attempts, err)}
	}
	if e != nil {
		return e
	}
	if errors.Is(err, circuitbreaker.ErrOpen) {
		return b.unavailable("circuit breaker open")
	}
	if st.attempts == 0 {
		return &Error{Kind: KindUnavailable, Gateway: b.name, Err: err}
	}
	return &Error{Kind: KindUnknown, Gateway: b.name, Err: err}
}

// disable takes the bank out of rotation after it refused storepay's
// credentials; ctx is the call's (a request's, whose id the alert then
// carries) or a probe's.
func (b *bank) disable(ctx context.Context, e *Error) {
	if b.disabled.Swap(true) {
		return
	}
	unauthorizedAlerts.Add(context.Background(), 1, metric.WithAttributes(attribute.String("gateway", b.name)))
	b.router.log.ErrorContext(ctx, "ALERT: bank rejected storepay's credentials (401); bank disabled until its API key is fixed and storepay restarted or a manager enables it",
		"gateway", b.name, "url", e.URL)
}

// observe records an attempt's outcome for the gateways view; ctx is
// the attempt's, so that a failure logged while serving a request names
// the request.
func (b *bank) observe(ctx context.Context, i int, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ok := err == nil
	if e := AsError(err); e != nil && e.Kind == KindRejected {
		ok = true // the bank answered
	}
	b.outcomes[b.nOutcomes%len(b.outcomes)] = ok
	b.nOutcomes++
	now := b.router.now()
	defer b.noteCondition(now)
	if ok {
		b.consecutive = 0
		b.lastOK = now
		b.preferred.Store(int32(i))
		return
	}
	b.consecutive++
	x := Explain(err)
	if raw := err.Error(); raw != b.lastRaw || b.consecutive == 1 {
		// The raw error goes to the log once per change, not per
		// attempt: a bank down for an hour is one line, not thousands.
		b.router.log.WarnContext(ctx, "bank call failed", "gateway", b.name, "code", x.Code, "err", raw)
		b.lastRaw = raw
	}
	b.lastErr, b.lastErrAt = x, now
	if e := AsError(err); e != nil && e.Kind == KindNotSent && len(b.eps) > 1 {
		b.preferred.Store(int32((i + 1) % len(b.eps)))
	}
}

// Enable puts a disabled bank back into service and closes its breaker:
// the manager's action after fixing the bank's API key. ctx is the
// manager's request (its id goes on the log line).
func (r *Router) Enable(ctx context.Context, name string) error {
	b, err := r.pinned(name)
	if err != nil {
		return err
	}
	b.disabled.Store(false)
	b.coolUntil.Store(0)
	b.probeFails.Store(0) // a manager's word; the next probes judge afresh
	b.breaker.Close()
	r.log.InfoContext(ctx, "bank enabled", "gateway", name)
	r.notifyAvailable(name)
	return nil
}

// Disable takes a bank out of service until Enable: a manager's action
// (ctx: the manager's request), or its replay at start.
func (r *Router) Disable(ctx context.Context, name string) error {
	b, err := r.pinned(name)
	if err != nil {
		return err
	}
	b.disabled.Store(true)
	r.log.WarnContext(ctx, "bank disabled by a manager", "gateway", name)
	return nil
}

// Status is what the router knows of one bank, for GET /v1/gateways.
type Status struct {
	Name  string   `json:"name"`
	State string   `json:"state"` // closed, open, half_open, disabled
	URL   string   `json:"url"`
	URLs  []string `json:"urls"`
	// Condition is State told to a manager: taking_payments (closed),
	// being_tested (half_open: the next call is a trial) or out (open or
	// disabled); Since is when the bank entered it.
	Condition string    `json:"condition"`
	Since     time.Time `json:"since,omitzero"`
	// LastSuccessAt is the last call the bank answered.
	LastSuccessAt time.Time `json:"last_success_at,omitzero"`
	// LastError is a sentence a manager can act on, LastErrorCode its
	// stable code (see [Explain]); the raw error is only in the log.
	// Both age out: once the bank has been taking payments for
	// [ErrorShownFor], an error from before its recovery is history, not
	// news, and is no longer shown (nor the failures that led to it).
	LastError           string    `json:"last_error"`
	LastErrorCode       string    `json:"last_error_code,omitempty"`
	LastErrorAt         time.Time `json:"last_error_at,omitzero"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	// SuccessRate is the share of the last (up to 100) attempts the bank
	// answered; -1 before any attempt.
	SuccessRate float64 `json:"success_rate"`
	Attempts    int     `json:"recent_attempts"`
}

// Statuses returns every bank's status, in priority order.
func (r *Router) Statuses() []Status {
	out := make([]Status, 0, len(r.banks))
	for _, b := range r.banks {
		out = append(out, b.status())
	}
	return out
}

func (b *bank) state() string {
	if b.disabled.Load() {
		return "disabled"
	}
	if st := stateName(b.breaker.State()); st == "open" || !b.probesFailing() {
		return st
	}
	return "open" // its probes keep failing: it takes no new payments
}

func (b *bank) status() Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.router.now()
	b.noteCondition(now)
	s := Status{Name: b.name, State: b.state(), URL: b.eps[int(b.preferred.Load())%len(b.eps)].URL(),
		Condition: b.cond, Since: b.condSince, LastSuccessAt: b.lastOK,
		LastError: b.lastErr.Text, LastErrorCode: b.lastErr.Code, LastErrorAt: b.lastErrAt, ConsecutiveFailures: b.consecutive, SuccessRate: -1}
	if stale(b.cond, b.condSince, b.lastErrAt, now) {
		s.LastError, s.LastErrorCode, s.LastErrorAt, s.ConsecutiveFailures = "", "", time.Time{}, 0
	}
	for _, ep := range b.eps {
		s.URLs = append(s.URLs, ep.URL())
	}
	n := min(b.nOutcomes, len(b.outcomes))
	if n > 0 {
		good := 0
		for i := 0; i < n; i++ {
			if b.outcomes[i] {
				good++
			}
		}
		s.SuccessRate, s.Attempts = float64(good)/float64(n), n
	}
	return s
}

// ErrorShownFor is how long a bank's last error stays in the gateways
// view after the bank is taking payments again.
const ErrorShownFor = time.Minute

// stale reports whether an error at errAt is history: the bank has been
// taking payments since after it, for ErrorShownFor.
func stale(cond string, since, errAt, now time.Time) bool {
	return cond == CondTakingPayments && !errAt.After(since) && now.Sub(since) >= ErrorShownFor
}

// The conditions a manager reads in the gateways view.
const (
	CondTakingPayments = "taking_payments"
	CondBeingTested    = "being_tested"
	CondOut            = "out"
)

func condition(state string) string {
	switch state {
	case "closed":
		return CondTakingPayments
	case "half_open":
		return CondBeingTested
	}
	return CondOut
}

// noteCondition records when the bank's condition changed. b.mu is held.
func (b *bank) noteCondition(now time.Time) {
	if c := condition(b.state()); c != b.cond {
		b.cond, b.condSince = c, now
	}
}

// probeLoop asks the bank's /v1/health now and then. failsafe-go changes a
// breaker's state only when a call comes, so without probes an idle store
// would show a recovered bank as open for minutes, and would learn of an
// outage only from a customer's payment.
func (b *bank) probeLoop(ctx context.Context) {
	t := time.NewTicker(b.pol.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-b.kick:
		}
		if b.disabled.Load() {
			continue
		}
		b.probe(ctx)
	}
}

func (b *bank) probe(ctx context.Context) {
	healthy := -1
	for i, ep := range b.eps {
		// A probe gets the time a first attempt gets: a bank slower than
		// that takes no new payments (they go to the next bank, or
		// offline, at once), while the calls it already has are still
		// heard with the slow timeout.
		pctx, cancel := context.WithTimeout(ctx, b.pol.AttemptTimeout)
		err := ep.Health(pctx)
		cancel()
		if err == nil {
			healthy = i
			break
		}
		if e := AsError(err); e != nil && e.Kind == KindUnauthorized {
			// The protocol: a 401 is a configuration fault, not an outage.
			// Alert and stop using the bank, rather than probe it in a loop.
			if e.URL == "" {
				e.URL = ep.URL()
			}
			b.disable(pctx, e)
			return
		}
	}
	var wasFailing bool
	var fails int32
	if healthy >= 0 {
		wasFailing = b.probeFails.Swap(0) >= 2
	} else {
		fails = b.probeFails.Add(1)
		wasFailing = fails > 2
	}
	if healthy >= 0 && b.breaker.IsHalfOpen() {
		b.mu.Lock()
		b.halfOpenOK++
		if b.halfOpenOK >= 2 {
			// Half-open waits for a real call as its trial; an idle store
			// has none, and would show the bank as being tested forever.
			// Two healthy probes in a row with no call failing between
			// them are the trial instead.
			b.breaker.Close()
			b.halfOpenOK, b.consecutive = 0, 0
			b.router.log.Info("bank answered its health checks while idle; taking payments again", "gateway", b.name)
		}
		b.noteCondition(b.router.now())
		b.mu.Unlock()
		return
	}
	b.mu.Lock()
	b.halfOpenOK = 0
	b.noteCondition(b.router.now())
	b.mu.Unlock()
	switch {
	case healthy >= 0 && b.breaker.IsOpen():
		// Let the next real call through as a trial (its listener says
		// the bank is available again).
		b.breaker.HalfOpen()
	case healthy >= 0 && wasFailing:
		// The probes' own gate on new payments lifts, the breaker being
		// closed: say so, as the breaker would.
		b.router.notifyChange(b.name, "open", "closed") // the probes' gate was an outage too
		b.router.notifyAvailable(b.name)
		if healthy == 0 {
			b.preferred.Store(0)
		}
	case healthy == 0:
		b.preferred.Store(0) // back to the primary URL once it answers
	case healthy < 0 && fails == 2:
		// New payments stay away (see takesNewPayments) until a probe
		// succeeds. The breaker is left to real calls: a capture or a
		// reversal at this bank still goes, and opens it if it fails.
		b.router.log.Warn("bank health probe failed on every URL twice; no new payments go to it until one succeeds", "gateway", b.name)
		if !b.breaker.IsOpen() {
			// The bank's state (see state) is open from now on: say so
			// to whoever records outages, as the breaker would.
			b.router.notifyChange(b.name, "closed", "open")
		}
	}
}
