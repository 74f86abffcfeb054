package iso8583

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"storepay/gateway"
)

var _ gateway.Endpoint = (*Endpoint)(nil)

// Traces gives every bank operation its [Trace]: the integrator's
// write-ahead of STAN, RRN and transmission time.
type Traces interface {
	// Trace returns the trace of the operation key names (the Key of a
	// gateway request), allocating it on first use from the terminal's
	// STANAllocator and committing it durably before returning. repeat
	// reports that the trace existed already: the operation was, or may
	// have been, sent before, so an advice goes out as its repeat (0221,
	// 0421) and a 0100 or 0200 is resent with the same RRN, which the
	// bank answers with its first answer.
	Trace(ctx context.Context, key string) (tr Trace, repeat bool, err error)
}

// MemoryTraces is an in-memory Traces for tests and tools: RRNs from
// [MakeRRN], forgotten on restart. Set STANs; Now defaults to time.Now.
type MemoryTraces struct {
	STANs STANAllocator
	Now   func() time.Time

	mu     sync.Mutex
	traces map[string]Trace
}

// Trace returns key's trace, allocating it on first use.
func (m *MemoryTraces) Trace(ctx context.Context, key string) (Trace, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if tr, ok := m.traces[key]; ok {
		return tr, true, nil
	}
	stan, err := m.STANs.NextSTAN(ctx)
	if err != nil {
		return Trace{}, false, err
	}
	now := time.Now
	if m.Now != nil {
		now = m.Now
	}
	t := now().UTC().Truncate(time.Second)
	tr := Trace{STAN: stan, RRN: MakeRRN(t, stan), Time: t}
	if m.traces == nil {
		m.traces = map[string]Trace{}
	}
	m.traces[key] = tr
	return tr, false, nil
}

// Operations a [Record] can be.
const (
	OpAuthorization = "authorization"  // 0100
	OpSale          = "sale"           // 0200, 000000
	OpOfflineAdvice = "offline_advice" // 0220, 38 = Y3
	OpRefund        = "refund"         // 0200, 200000
)

// Record statuses beyond the gateway's approved, declined and reversed.
const (
	// RecordUnknown: sent, or perhaps sent, and no answer known. Only a
	// reversal advice settles it.
	RecordUnknown = "unknown"
	// RecordNotSent: nothing reached the bank, or it provably did
	// nothing (91, 03, a refused connection).
	RecordNotSent = "not_sent"
	// RecordRefunded is the status of a refund the bank accepted.
	RecordRefunded = "refunded"
)

// definite reports whether a status is the bank's answer.
func definite(status string) bool {
	switch status {
	case gateway.StatusApproved, gateway.StatusDeclined, gateway.StatusReversed, RecordRefunded:
		return true
	}
	return false
}

// Record is what the adapter keeps of an operation it sent, for the later
// messages that must name it in field 90 (a completion, a refund, a
// reversal) and carry its card, amount and currency. It lives in memory
// only, a bounded number of them: the integrator persists it with the
// operation (after every call that changes it: [Endpoint.Record]) and
// gives it back with [Endpoint.Restore] after a restart.
type Record struct {
	// ID is the RRN of the operation's message: the Authorization.ID or
	// Refund.ID the adapter returned, and the psp_reference of the
	// operation's settlement row.
	ID string `json:"id"`
	// Reference is storepay's payment id (AuthRequest.Reference).
	Reference string `json:"reference,omitempty"`
	Op        string `json:"op"`
	// Sent names the operation's message in a later field 90.
	Sent Original `json:"sent"`
	// Completion names the 0220 that captured a pre-authorization: what
	// a refund of it names.
	Completion *Original `json:"completion,omitempty"`
	// ReversalRefused: the switch refused this operation's reversal (it
	// settled it): the operation stands, and its own repeat tells its
	// answer.
	ReversalRefused bool `json:"reversal_refused,omitempty"`
	// CompletionRRN is that 0220's RRN: the psp_reference of the
	// capture's settlement row.
	CompletionRRN  string `json:"completion_rrn,omitempty"`
	Status         string `json:"status"`
	AuthCode       string `json:"auth_code,omitempty"`
	DeclineCode    string `json:"decline_code,omitempty"`
	Amount         int64  `json:"amount"`
	CapturedAmount int64  `json:"captured_amount,omitempty"`
	Currency       string `json:"currency"`
	// AuthorizationID is, for a refund, the ID of what it refunds.
	AuthorizationID string `json:"authorization_id,omitempty"`
	// SealedCard is the card sealed by the vault under ID (nil without a
	// vault): every later message of the profile carries field 2.
	SealedCard []byte `json:"sealed_card,omitempty"`
}

func (r Record) processingCode() string {
	if r.Op == OpRefund {
		return ProcessingRefund
	}
	return ProcessingPurchase
}

// charged names the message that charged the card: what a refund names.
func (r Record) charged() (Original, bool) {
	switch {
	case r.Op == OpAuthorization && r.Completion != nil:
		return *r.Completion, true
	case r.Op == OpSale || r.Op == OpOfflineAdvice:
		return r.Sent, true
	}
	return Original{}, false
}

// EndpointConfig configures an [Endpoint].
type EndpointConfig struct {
	// Client sends the messages; the caller opens and closes it.
	Client *Client
	// Traces gives each operation its trace (required).
	Traces Traces
	// Vault seals the card in the records, so that a capture, refund or
	// void through the gateway.Endpoint methods can carry it (field 2).
	// Without one those methods are refused (KindRejected,
	// card_unavailable) and the caller uses the Client's typed methods.
	Vault *gateway.Vault
	// MaxRecords bounds the records kept in memory; the oldest go first.
	// Zero means 10000.
	MaxRecords int
	// Store, when set, keeps the records across restarts: each is saved
	// before its message is sent (no record, nothing sent) and after
	// every answer, and found there when memory no longer holds it.
	Store RecordStore
}

// RecordStore keeps an Endpoint's records durably (storepay's is in
// SQLite: durable.go).
type RecordStore interface {
	SaveRecord(ctx context.Context, r Record) error
	LoadRecord(ctx context.Context, id string) (Record, bool, error)
	LoadRecords(ctx context.Context, reference string) ([]Record, error)
}

// Endpoint adapts a [Client] to [gateway.Endpoint], so that an ISO 8583
// gateway sits in storepay's router beside acquirer-json ones. The
// mapping is direct for Authorize (0100, 0200, or 0220 with 38 = Y3 when
// Stored), Capture (0220 completion), Reverse (0420), Refund (0200
// refund) and Health (echo); ISO 8583 has no lookup (Find) and delivers
// settlement as files (Settlement): both are refused with KindRejected,
// Code not_supported. What the interface cannot say (a reversal of an
// operation whose outcome is unknown, by its record; the typed messages)
// is in [Endpoint.ReverseRecord] and [Endpoint.Client].
type Endpoint struct {
	c      *Client
	traces Traces
	vault  *gateway.Vault
	max    int
	store  RecordStore

	mu      sync.Mutex // guards the fields below
	records map[string]*Record
	order   []string // record IDs, oldest first
}

// Codes of the requests the adapter refuses without sending anything.
const (
	CodeNotSupported         = gateway.CodeNotSupported
	CodeUnknownAuthorization = "unknown_authorization"
	CodeCardUnavailable      = "card_unavailable"
	CodeNotCaptured          = "not_captured"
)

// NewEndpoint returns an Endpoint for cfg.
func NewEndpoint(cfg EndpointConfig) (*Endpoint, error) {
	if cfg.Client == nil || cfg.Traces == nil {
		return nil, errors.New("iso8583: an endpoint needs a client and traces")
	}
	if cfg.MaxRecords <= 0 {
		cfg.MaxRecords = 10000
	}
	return &Endpoint{c: cfg.Client, traces: cfg.Traces, vault: cfg.Vault, max: cfg.MaxRecords, store: cfg.Store,
		records: map[string]*Record{}}, nil
}

// Client returns the client, for the typed messages.
func (e *Endpoint) Client() *Client { return e.c }

// URL returns the switch's URL.
func (e *Endpoint) URL() string { return e.c.URL() }

// Record returns the record of an operation by ID (an RRN), to persist
// it.
func (e *Endpoint) Record(id string) (Record, bool) {
	e.mu.Lock()
	r, ok := e.records[id]
	var out Record
	if ok {
		out = *r
	}
	e.mu.Unlock()
	if ok || e.store == nil {
		return out, ok
	}
	out, ok, err := e.store.LoadRecord(context.Background(), id)
	if err != nil || !ok {
		return Record{}, false
	}
	e.put(out)
	return out, true
}

// Records returns the records of a payment, oldest first.
func (e *Endpoint) Records(reference string) []Record {
	var out []Record
	if e.store != nil && reference != "" {
		if stored, err := e.store.LoadRecords(context.Background(), reference); err == nil {
			for _, r := range stored {
				// The store's answer wins over a copy in memory that has
				// none: another endpoint of this gateway may have heard it.
				if old, ok := e.Record(r.ID); !ok || definite(r.Status) && !definite(old.Status) {
					e.put(r)
				}
			}
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, id := range e.order {
		if r := e.records[id]; r.Reference == reference && reference != "" {
			out = append(out, *r)
		}
	}
	return out
}

// Restore puts persisted records back, after a restart.
func (e *Endpoint) Restore(recs ...Record) {
	for _, r := range recs {
		e.put(r)
	}
}

func (e *Endpoint) put(r Record) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if old, ok := e.records[r.ID]; ok {
		*old = r
		return
	}
	e.records[r.ID] = &r
	e.order = append(e.order, r.ID)
	for len(e.order) > e.max {
		delete(e.records, e.order[0])
		e.order = e.order[1:]
	}
}

func (e *Endpoint) update(id string, change func(*Record)) error {
	e.mu.Lock()
	r, ok := e.records[id]
	var changed Record
	if ok {
		change(r)
		changed = *r
	}
	e.mu.Unlock()
	if !ok || e.store == nil {
		return nil
	}
	if err := e.store.SaveRecord(context.Background(), changed); err != nil {
		e.c.log.Error("iso8583: save the record of an answer", "gateway", e.c.cfg.Gateway, "rrn", id, "err", err)
		return e.unkept(id, err)
	}
	return nil
}

// unkept is the error of an answer the bank gave and the store could not
// keep: the outcome is unknown to the caller until a repeat finds the
// answer on disk. A caller that took it as definite would commit what a
// restart then contradicts: after a crash the record on disk still reads
// "unknown" (or "approved" under a refund), and a later message is
// refused or reversed against the bank's books (found by the simulator,
// seed 409660: a sale captured with its record left "unknown" made its
// refund's repeat answer not_captured while the bank had refunded).
func (e *Endpoint) unkept(id string, err error) error {
	return e.c.fail(gateway.KindUnknown, "", fmt.Errorf("keep the answer of %s: %w", id, err))
}

// Authorize sends a sale (0200) when req.Capture, a pre-authorization
// (0100) otherwise, and an offline advice (0220 with 38 = Y3, 0221 when
// its trace was used before) when req.Stored. Its record, made before
// anything is sent, is kept under the trace's RRN, which is the
// Authorization's ID. A decline is an Authorization with Status declined.
func (e *Endpoint) Authorize(ctx context.Context, req gateway.AuthRequest) (gateway.Authorization, error) {
	if req.Stored && !req.Capture {
		return gateway.Authorization{}, e.c.invalid(errors.New("an offline advice is a capture"))
	}
	key, err := e.current(ctx, req.Key)
	if err != nil {
		return gateway.Authorization{}, err
	}
	tr, repeat, err := e.trace(ctx, key)
	if err != nil {
		return gateway.Authorization{}, err
	}
	rec := Record{ID: tr.RRN, Reference: req.Reference, Status: RecordUnknown, Amount: req.Amount, Currency: req.Currency}
	var send func() (Answer, error)
	switch {
	case req.Stored:
		r := OfflineAdvice{Trace: tr, Card: req.Card, Amount: req.Amount, Currency: req.Currency, Repeat: repeat}
		rec.Op, rec.Sent = OpOfflineAdvice, r.Ref()
		send = func() (Answer, error) { return e.c.Advise(ctx, r) }
	case req.Capture:
		r := Purchase{Trace: tr, Card: req.Card, Amount: req.Amount, Currency: req.Currency}
		rec.Op, rec.Sent = OpSale, r.Ref()
		send = func() (Answer, error) { return e.c.Purchase(ctx, r) }
	default:
		r := Authorization{Trace: tr, Card: req.Card, Amount: req.Amount, Currency: req.Currency}
		rec.Op, rec.Sent = OpAuthorization, r.Ref()
		send = func() (Answer, error) { return e.c.Authorize(ctx, r) }
	}
	if e.vault != nil {
		if rec.SealedCard, err = e.vault.Seal(rec.ID, req.Card); err != nil {
			return gateway.Authorization{}, e.c.fail(gateway.KindNotSent, "", fmt.Errorf("seal card: %w", err))
		}
	}
	rec, prev, err := e.begin(ctx, rec, repeat)
	if err != nil {
		return gateway.Authorization{}, err
	}
	if definite(rec.Status) {
		// The bank answered it before: a repeat would hear the same
		// answer, or, under a fault, an answer about the repeat alone.
		return authorizationOf(rec), nil
	}
	ans, err := send()
	if err != nil {
		return gateway.Authorization{}, e.failed(rec.ID, prev, err)
	}
	err = e.update(rec.ID, func(r *Record) {
		r.AuthCode, r.DeclineCode = ans.AuthCode, ans.DeclineCode()
		r.Status = gateway.StatusDeclined
		if ans.Approved() {
			r.Status = gateway.StatusApproved
			if r.Op != OpAuthorization {
				r.CapturedAmount = r.Amount
			}
		}
		rec = *r
	})
	if err != nil {
		return gateway.Authorization{}, err
	}
	return authorizationOf(rec), nil
}

func authorizationOf(r Record) gateway.Authorization {
	return gateway.Authorization{
		ID: r.ID, Reference: r.Reference, Status: r.Status, Amount: r.Amount,
		CapturedAmount: r.CapturedAmount, Currency: r.Currency, AuthCode: r.AuthCode, DeclineCode: r.DeclineCode,
	}
}

// Find is refused: ISO 8583 has no lookup. An unknown outcome is
// resolved by a reversal advice ([Endpoint.ReverseRecord]).
func (e *Endpoint) Find(context.Context, gateway.Lookup) ([]gateway.Authorization, error) {
	return nil, e.c.fail(gateway.KindRejected, CodeNotSupported, errors.New("ISO 8583 has no lookup: resolve by a reversal advice"))
}

// Settlement is refused: an ISO 8583 gateway's settlement reports come as
// files (storepay reconcile --settlement NAME=PATH).
func (e *Endpoint) Settlement(context.Context, string) ([]byte, error) {
	return nil, e.c.fail(gateway.KindRejected, CodeNotSupported, errors.New("ISO 8583 settlement reports come as files"))
}

// Health sends an echo test.
func (e *Endpoint) Health(ctx context.Context) error { return e.c.Echo(ctx) }

// Capture completes a pre-authorization (0220, 0221 when its trace was
// used before) with 38 = its code and 90 = its 0100. Above the 20%
// allowance is KindRejected invalid_amount; a decline code is KindRejected
// with that code.
func (e *Endpoint) Capture(ctx context.Context, req gateway.CaptureRequest) (gateway.Authorization, error) {
	rec, card, err := e.follow(req.AuthorizationID)
	if err != nil {
		return gateway.Authorization{}, err
	}
	if rec.Op != OpAuthorization || rec.Status != gateway.StatusApproved {
		return gateway.Authorization{}, e.c.fail(gateway.KindRejected, "not_approved", fmt.Errorf("%s %s is %s", rec.Op, rec.ID, rec.Status))
	}
	tr, repeat, err := e.trace(ctx, req.Key)
	if err != nil {
		return gateway.Authorization{}, err
	}
	r := Completion{Trace: tr, Card: card, Amount: req.Amount, Currency: rec.Currency, AuthCode: rec.AuthCode, Original: rec.Sent, Repeat: repeat}
	ans, err := e.c.Complete(ctx, r)
	if err == nil && !ans.Approved() {
		err = e.c.fail(gateway.KindRejected, ans.DeclineCode(), &ResponseError{MTI: ans.MTI, Code: ans.ResponseCode})
	}
	if err != nil {
		return gateway.Authorization{}, err
	}
	comp := r.Ref()
	if err := e.update(rec.ID, func(x *Record) { x.Completion, x.CompletionRRN, x.CapturedAmount = &comp, tr.RRN, req.Amount; rec = *x }); err != nil {
		return gateway.Authorization{}, err
	}
	return authorizationOf(rec), nil
}

// Reverse sends a reversal advice (0420 with 39 = 17, 0421 when its trace
// was used before) of the authorization req names; with only a Reference,
// of every operation of that payment the adapter holds a record of that
// is not reversed or declined (each under a trace keyed by req.Key and
// its ID, with 39 = 68 for those whose outcome is unknown). It returns
// the reversed authorizations. 00 means the bank holds nothing of the
// original any more.
func (e *Endpoint) Reverse(ctx context.Context, req gateway.ReverseRequest) ([]gateway.Authorization, error) {
	if req.AuthorizationID != "" {
		rec, _, err := e.follow(req.AuthorizationID)
		if err != nil {
			return nil, err
		}
		if _, err := e.ReverseRecord(ctx, req.Key, rec, ReasonCustomerCancellation); err != nil {
			return nil, err
		}
		rec, _ = e.Record(rec.ID)
		return []gateway.Authorization{authorizationOf(rec)}, nil
	}
	if req.Reference == "" {
		return nil, e.c.invalid(errors.New("reversal without an authorization id or a reference"))
	}
	out := []gateway.Authorization{}
	for _, rec := range e.Records(req.Reference) {
		if rec.Op == OpRefund || rec.Status == gateway.StatusDeclined || rec.Status == RecordNotSent {
			continue
		}
		if rec.Status != gateway.StatusReversed {
			reason := ReasonCustomerCancellation
			if rec.Status == RecordUnknown {
				reason = ReasonNoAnswer
			}
			if _, err := e.ReverseRecord(ctx, req.Key+"/"+rec.ID, rec, reason); err != nil {
				// A charge the switch settled can no longer be reversed
				// (12): it is refunded in full instead.
				if ge := gateway.AsError(err); ge == nil || ge.Kind != gateway.KindRejected {
					return nil, err
				}
				if rerr := e.refundSettled(ctx, req.Key+"/"+rec.ID+":refund", rec); rerr != nil {
					// The refund's error is what the caller must act
					// on: the charge stands until it is answered. (The
					// refused reversal alone would read "nothing done".)
					return nil, fmt.Errorf("%w (its reversal was refused: %v)", rerr, err)
				}
			}
			rec, _ = e.Record(rec.ID)
		}
		out = append(out, authorizationOf(rec))
	}
	return out, nil
}

// ReverseRecord sends a reversal advice of the operation rec records
// (0420, or 0421 when key's trace was used before) with reason 17 (a
// void, a cancel) or 68 (its answer did not come): the way to resolve an
// unknown outcome, since ISO 8583 has no lookup. An advice must be
// delivered: on an unknown outcome or KindNotProcessed the caller calls
// again with the same key until another answer comes; only then may the
// payment go to another bank. 00 marks the record reversed (the bank holds
// nothing of it any more, whether it reversed it or never received it).
// rec may come from the caller's persistence; it is kept.
func (e *Endpoint) ReverseRecord(ctx context.Context, key string, rec Record, reason string) (Answer, error) {
	card, err := e.card(rec)
	if err != nil {
		return Answer{}, err
	}
	if e.store != nil {
		if err := e.store.SaveRecord(ctx, rec); err != nil {
			return Answer{}, e.c.fail(gateway.KindNotSent, "", fmt.Errorf("save the record before sending: %w", err))
		}
	}
	e.put(rec)
	tr, repeat, err := e.trace(ctx, key)
	if err != nil {
		return Answer{}, err
	}
	orig := rec.Sent
	r := Reversal{
		Trace: tr, Card: card, Amount: rec.Amount, Currency: rec.Currency, ProcessingCode: rec.processingCode(),
		Reason: reason, Original: orig, Repeat: repeat,
	}
	ans, err := e.c.Reverse(ctx, r)
	if err == nil && !ans.Approved() {
		err = e.c.fail(gateway.KindRejected, ans.DeclineCode(), &ResponseError{MTI: ans.MTI, Code: ans.ResponseCode})
	}
	if err != nil {
		return ans, err
	}
	err = e.update(rec.ID, func(x *Record) {
		if x.Op == OpRefund {
			x.Status = gateway.StatusReversed
			return
		}
		if x.Status == RecordUnknown || x.Status == gateway.StatusApproved {
			x.Status = gateway.StatusReversed
		}
	})
	return ans, err
}

// refundSettled refunds in full an operation whose reversal the switch
// refused because it settled it, whatever storepay knew of its answer:
// 00 means refunded, 12 that the switch never charged it (nothing to
// give back). Either way the record is marked reversed: nothing of it
// stays with the card holder.
func (e *Endpoint) refundSettled(ctx context.Context, key string, rec Record) error {
	charged, ok := rec.charged()
	if !ok {
		return e.c.fail(gateway.KindRejected, CodeNotCaptured, fmt.Errorf("%s %s charged nothing", rec.Op, rec.ID))
	}
	card, err := e.card(rec)
	if err != nil {
		return err
	}
	tr, _, err := e.trace(ctx, key)
	if err != nil {
		return err
	}
	amount := rec.CapturedAmount
	if amount == 0 {
		amount = rec.Amount
	}
	ans, err := e.c.Refund(ctx, Refund{Trace: tr, Card: card, Amount: amount, Currency: rec.Currency, Original: charged})
	switch {
	case ans.ResponseCode == CodeInvalidTransaction: // never charged: nothing to give back
	case err != nil:
		return err
	case !ans.Approved():
		return e.c.fail(gateway.KindRejected, ans.DeclineCode(), &ResponseError{MTI: ans.MTI, Code: ans.ResponseCode})
	}
	return e.update(rec.ID, func(x *Record) { x.Status = gateway.StatusReversed })
}

// Refund refunds part or all of what the authorization req names charged
// (0200 with 3 = 200000 and 90 = the sale, completion or offline advice).
// Above what is left is KindRejected invalid_amount. The Refund's ID is
// its RRN; its record is kept under it.
func (e *Endpoint) Refund(ctx context.Context, req gateway.RefundRequest) (gateway.Refund, error) {
	rec, card, err := e.follow(req.AuthorizationID)
	if err != nil {
		return gateway.Refund{}, err
	}
	charged, ok := rec.charged()
	if !ok || rec.Status != gateway.StatusApproved {
		refused := e.c.fail(gateway.KindRejected, CodeNotCaptured, fmt.Errorf("%s %s charged nothing", rec.Op, rec.ID))
		// A repeat is not refused on what storepay knows of the sale:
		// its first attempt may have reached the bank. Its own record
		// tells; without an answer in it the outcome stays unknown.
		tr, sent, err := e.peek(ctx, req.Key)
		if err != nil {
			return gateway.Refund{}, e.c.fail(gateway.KindUnknown, "", fmt.Errorf("refund of %s: %w", rec.ID, err))
		}
		if !sent {
			return gateway.Refund{}, refused
		}
		if own, ok := e.Record(tr.RRN); ok && own.Status == RecordRefunded {
			return gateway.Refund{ID: own.ID, AuthorizationID: rec.ID, Amount: own.Amount, Status: RecordRefunded}, nil
		} else if ok && own.Status == RecordNotSent {
			return gateway.Refund{}, refused
		}
		return gateway.Refund{}, e.c.fail(gateway.KindUnknown, "", fmt.Errorf("refund %s of %s (%s): an earlier attempt may have reached the bank", tr.RRN, rec.ID, rec.Status))
	}
	tr, repeat, err := e.trace(ctx, req.Key)
	if err != nil {
		return gateway.Refund{}, err
	}
	r := Refund{Trace: tr, Card: card, Amount: req.Amount, Currency: rec.Currency, Original: charged}
	refund := Record{
		ID: tr.RRN, Reference: req.Reference, Op: OpRefund, Sent: r.Ref(), Status: RecordUnknown,
		Amount: req.Amount, Currency: rec.Currency, AuthorizationID: rec.ID,
	}
	if refund.Reference == "" {
		refund.Reference = rec.Reference
	}
	if e.vault != nil {
		if refund.SealedCard, err = e.vault.Seal(refund.ID, card); err != nil {
			return gateway.Refund{}, e.c.fail(gateway.KindNotSent, "", fmt.Errorf("seal card: %w", err))
		}
	}
	refund, prev, err := e.begin(ctx, refund, repeat)
	if err != nil {
		return gateway.Refund{}, err
	}
	if refund.Status == RecordRefunded {
		return gateway.Refund{ID: refund.ID, AuthorizationID: rec.ID, Amount: refund.Amount, Status: RecordRefunded}, nil
	}
	ans, err := e.c.Refund(ctx, r)
	if err == nil && !ans.Approved() {
		err = e.c.fail(gateway.KindRejected, ans.DeclineCode(), &ResponseError{MTI: ans.MTI, Code: ans.ResponseCode})
	}
	if err != nil {
		return gateway.Refund{}, e.failed(refund.ID, prev, err)
	}
	if err := e.update(refund.ID, func(x *Record) { x.Status, x.AuthCode = RecordRefunded, ans.AuthCode }); err != nil {
		return gateway.Refund{}, err
	}
	return gateway.Refund{ID: refund.ID, AuthorizationID: rec.ID, Amount: req.Amount, Status: RecordRefunded}, nil
}

// begin keeps rec, made before its message is sent, and returns it with
// the status an earlier attempt left ("" for none). A record the bank
// already answered for stays as it is: a repeat does not unlearn it.
func (e *Endpoint) begin(ctx context.Context, rec Record, repeat bool) (Record, string, error) {
	prev := ""
	if old, ok := e.Record(rec.ID); ok {
		prev = old.Status
		if definite(old.Status) {
			// The answer may be known in memory only (its save failed):
			// it is on disk before anyone acts on it.
			if e.store != nil {
				if err := e.store.SaveRecord(ctx, old); err != nil {
					return old, prev, e.unkept(old.ID, err)
				}
			}
			return old, prev, nil
		}
		if prev == RecordUnknown {
			rec.Status = RecordUnknown
		}
	} else if repeat {
		// The trace was used before and no record of it is found: an
		// earlier attempt may have been sent (its record was not kept, or
		// was overwritten). A failure of this one proves nothing about
		// that one: the outcome stays unknown, for a reversal to settle
		// (found by the simulator, seed 363416: a "not sent" written over
		// an approval left the sale charged and declined).
		prev = RecordUnknown
	}
	if e.store != nil {
		// On disk before it is sent: a later completion, refund or
		// reversal needs it after any restart.
		if err := e.store.SaveRecord(ctx, rec); err != nil {
			return rec, prev, e.c.fail(gateway.KindNotSent, "", fmt.Errorf("save the record before sending: %w", err))
		}
	}
	e.put(rec)
	return rec, prev, nil
}

// failed records what a failed attempt proves about the record id and
// returns the error to report. A repeat that did nothing (refused, 91)
// proves nothing about an earlier attempt that may have reached the bank:
// the operation's outcome stays unknown, and so does the error's kind, so
// that no caller reads "nothing done" into it and sends the payment
// elsewhere without the reversal.
func (e *Endpoint) failed(id, prev string, err error) error {
	unknown := false
	// A save that fails keeps the record written before sending, which
	// reads "unknown": the safer of the two.
	_ = e.update(id, func(r *Record) {
		switch {
		case definite(r.Status):
		case gateway.NothingDone(err) && prev == RecordUnknown:
			r.Status, unknown = RecordUnknown, true
		case gateway.NothingDone(err):
			r.Status = RecordNotSent
		default:
			r.Status = RecordUnknown
		}
	})
	if unknown {
		return e.c.fail(gateway.KindUnknown, "", fmt.Errorf("an earlier attempt of %s may have reached the bank; this one: %w", id, err))
	}
	return err
}

// follow returns the record of an authorization a later message names,
// and its card.
func (e *Endpoint) follow(id string) (Record, gateway.Card, error) {
	if id == "" {
		return Record{}, gateway.Card{}, e.c.invalid(errors.New("no authorization id"))
	}
	rec, ok := e.Record(id)
	if !ok {
		return Record{}, gateway.Card{}, e.c.fail(gateway.KindRejected, CodeUnknownAuthorization,
			fmt.Errorf("no record of %s here: restore it from storage (Endpoint.Restore)", id))
	}
	card, err := e.card(rec)
	return rec, card, err
}

func (e *Endpoint) card(rec Record) (gateway.Card, error) {
	if e.vault == nil || len(rec.SealedCard) == 0 {
		return gateway.Card{}, e.c.fail(gateway.KindRejected, CodeCardUnavailable,
			fmt.Errorf("no card for %s: every message of the profile carries field 2", rec.ID))
	}
	card, err := e.vault.Open(rec.ID, rec.SealedCard)
	if err != nil {
		return gateway.Card{}, e.c.fail(gateway.KindRejected, CodeCardUnavailable, err)
	}
	return card, nil
}

func (e *Endpoint) trace(ctx context.Context, key string) (Trace, bool, error) {
	if key == "" {
		return Trace{}, false, e.c.invalid(errors.New("a request without a key has no trace"))
	}
	tr, repeat, err := e.traces.Trace(ctx, key)
	if err != nil {
		return Trace{}, false, e.c.fail(gateway.KindNotSent, "", fmt.Errorf("trace: %w", err))
	}
	return tr, repeat, nil
}

var (
	_ gateway.Reverser = (*Endpoint)(nil)
	_ gateway.Adviser  = (*Endpoint)(nil)
)

// ReversalKeySuffix names the reversal advice that resolves an operation
// whose outcome is unknown: the operation's key plus this suffix.
const ReversalKeySuffix = ":reversal"

// ResolveUnknown resolves an operation whose outcome is unknown the
// profile's way: the reversal advice (0420, 39 = 68) of the operation
// req.Key started, under its own trace (a repeat of it is a 0421). nil
// means the bank acknowledged it (00): it holds nothing of the operation,
// whether it had approved it or never received it, and the payment may
// go to another bank. An operation that never reached the point of
// sending holds nothing either.
func (e *Endpoint) ResolveUnknown(ctx context.Context, req gateway.AuthRequest) error {
	key, err := e.current(ctx, req.Key)
	if err != nil {
		return err
	}
	tr, _, err := e.trace(ctx, key)
	if err != nil {
		return err
	}
	rec, ok := e.Record(tr.RRN)
	if !ok {
		return nil // never sent: no record is made after sending
	}
	switch rec.Status {
	case RecordNotSent, gateway.StatusDeclined, gateway.StatusReversed:
		return nil
	}
	_, err = e.ReverseRecord(ctx, key+ReversalKeySuffix, rec, ReasonNoAnswer)
	return err
}

// RetryKeySuffix names the operation that takes the place of one whose
// reversal advice was sent: the original's RRN is reversed (or being
// reversed), so the request is sent again as a new operation, with a new
// trace, once the reversal is acknowledged.
const RetryKeySuffix = ":retry"

// current returns the key of the operation that now stands for key: the
// key itself, or, when a reversal advice was sent for it, the operation
// that replaced it. A reversal sent and not acknowledged yet is repeated
// (0421) first: until it is, nothing more is sent, and the outcome stays
// unknown. A repeat of the original under its RRN would be answered with
// its first answer, an approval the reversal has since undone.
func (e *Endpoint) current(ctx context.Context, key string) (string, error) {
	for range 8 {
		_, sent, err := e.peek(ctx, key+ReversalKeySuffix)
		if err != nil || !sent {
			return key, err
		}
		tr, _, err := e.trace(ctx, key)
		if err != nil {
			return "", err
		}
		rec, ok := e.Record(tr.RRN)
		if ok && rec.ReversalRefused {
			return key, nil // the operation stands: its repeat is answered as it was
		}
		if ok && rec.Status != gateway.StatusReversed && rec.Status != gateway.StatusDeclined && rec.Status != RecordNotSent {
			if _, err := e.ReverseRecord(ctx, key+ReversalKeySuffix, rec, ReasonNoAnswer); err != nil {
				if ge := gateway.AsError(err); ge != nil && ge.Kind == gateway.KindRejected {
					// Refused (12: the switch settled it): the operation
					// stands, and its repeat under its RRN hears its answer.
					if err := e.update(rec.ID, func(x *Record) { x.ReversalRefused = true }); err != nil {
						return "", err
					}
					return key, nil
				}
				return "", err
			}
		}
		key += RetryKeySuffix
	}
	return "", e.c.fail(gateway.KindRejected, "too_many_reversals", errors.New("an operation reversed eight times"))
}

// TracePeeker is a Traces that can tell whether a key's trace exists
// without allocating it. [Durable] and [MemoryTraces] are.
type TracePeeker interface {
	Peek(ctx context.Context, key string) (Trace, bool, error)
}

func (e *Endpoint) peek(ctx context.Context, key string) (Trace, bool, error) {
	p, ok := e.traces.(TracePeeker)
	if !ok {
		return Trace{}, false, nil
	}
	tr, found, err := p.Peek(ctx, key)
	if err != nil {
		return Trace{}, false, e.c.fail(gateway.KindNotSent, "", fmt.Errorf("trace: %w", err))
	}
	return tr, found, nil
}

// Peek returns key's trace if it exists.
func (m *MemoryTraces) Peek(_ context.Context, key string) (Trace, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	tr, ok := m.traces[key]
	return tr, ok, nil
}

// DeliversAdvices reports that completions and reversals are advices,
// repeated until answered.
func (e *Endpoint) DeliversAdvices() bool { return true }
