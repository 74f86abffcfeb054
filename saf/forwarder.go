package saf

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/failsafe-go/failsafe-go/ratelimiter"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"storepay/gateway"
	"storepay/migrations"
	"storepay/orders"
)

// ForwardPolicy is how the forwarder treats the banks. Zero fields take
// their defaults.
type ForwardPolicy struct {
	// Concurrency is how many forwards may be in flight per bank. Default
	// 1: an emergency stop then halts a drain within one call in flight
	// per bank (the calls already sent cannot be taken back), and a
	// recovering bank sees one store's backlog one payment at a time.
	Concurrency int
	// RatePerSecond caps forwards per second per bank, so that a bank
	// coming back from an outage is not stampeded. Default 20.
	RatePerSecond float64
	// MaxAttempts is how many times a record may fail at a bank that
	// answered (or whose answer was lost) before it is held for a
	// manager. A bank being unavailable does not count. Default 10.
	MaxAttempts int
	// BackoffMin and BackoffMax bound each record's own exponential
	// backoff. Defaults 1s and 5m.
	BackoffMin, BackoffMax time.Duration
	// Interval is how often the queue is scanned when nothing wakes the
	// forwarder. Default 1s; negative switches the forwarder off.
	Interval time.Duration
	// CallTimeout bounds one forward at a bank, retries included.
	// Default 30s.
	CallTimeout time.Duration
	// The runaway guard pauses forwarding (an emergency stop "pause",
	// with an alert) when, within GuardWindow, more than GuardMaxErrors
	// forwards failed or more than GuardMaxAmount was forwarded.
	// Defaults 1m, 100 and no amount cap.
	GuardWindow    time.Duration
	GuardMaxErrors int
	GuardMaxAmount int64
}

func (p ForwardPolicy) withDefaults() ForwardPolicy {
	if p.Concurrency <= 0 {
		p.Concurrency = 1
	}
	if p.RatePerSecond <= 0 {
		p.RatePerSecond = 20
	}
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = 10
	}
	if p.BackoffMin <= 0 {
		p.BackoffMin = time.Second
	}
	if p.BackoffMax <= 0 {
		p.BackoffMax = 5 * time.Minute
	}
	if p.Interval == 0 {
		p.Interval = time.Second
	}
	if p.CallTimeout <= 0 {
		p.CallTimeout = 30 * time.Second
	}
	if p.GuardWindow <= 0 {
		p.GuardWindow = time.Minute
	}
	if p.GuardMaxErrors <= 0 {
		p.GuardMaxErrors = 100
	}
	return p
}

// forwarder is the background half of the queue.
type forwarder struct {
	q         *Queue
	pol       ForwardPolicy
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	recording sync.WaitGroup // outcomes being committed
	wakeCh    chan struct{}
	lanes     map[string]*lane

	mu           sync.Mutex
	dispatched   map[string]bool
	flightCtx    context.Context // cancelled by an emergency stop "stop"
	flightCancel context.CancelFunc
	guardEvents  []guardEvent
	guardTripped bool
}

// lane is one bank's workers.
type lane struct {
	bank    string
	ch      chan Record
	limiter ratelimiter.RateLimiter[any]
}

type guardEvent struct {
	at     time.Time
	failed bool
	amount int64
}

// Open starts the forwarder. Records a crash left "forwarding" go back to
// the queue, still pinned to their bank.
func (q *Queue) Open() error {
	unregister, err := q.observe()
	if err != nil {
		return fmt.Errorf("saf: metrics: %w", err)
	}
	q.unobserve = unregister
	pol := q.Forward.withDefaults()
	if pol.Interval < 0 {
		return nil
	}
	now := migrations.FormatTime(q.now())
	err = q.DB.Update(context.Background(), func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE saf_records SET status = 'queued', next_attempt_at = ?, updated_at = ? WHERE status = 'forwarding'`, now, now)
		return err
	})
	if err != nil {
		return fmt.Errorf("saf: recover records left forwarding: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &forwarder{q: q, pol: pol, ctx: ctx, cancel: cancel, wakeCh: make(chan struct{}, 1),
		lanes: map[string]*lane{}, dispatched: map[string]bool{}}
	f.flightCtx, f.flightCancel = context.WithCancel(ctx)
	for _, b := range q.Bank.Banks() {
		l := &lane{bank: b, ch: make(chan Record, pol.Concurrency),
			limiter: ratelimiter.NewSmoothBuilderWithMaxRate[any](time.Duration(float64(time.Second) / pol.RatePerSecond)).Build()}
		f.lanes[b] = l
		for i := 0; i < pol.Concurrency; i++ {
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				f.work(l)
			}()
		}
	}
	q.fwd = f
	q.Bank.OnAvailable(f.bankAvailable)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.scan()
	}()
	return nil
}

// Close stops the forwarder: forwards in flight finish (their outcome is
// recorded), nothing new starts.
func (q *Queue) Close() {
	if q.unobserve != nil {
		q.unobserve()
	}
	if q.fwd == nil {
		return
	}
	q.fwd.cancel()
	q.fwd.wg.Wait()
	q.fwd.recording.Wait()
}

func (q *Queue) wake() {
	if q.fwd != nil {
		q.fwd.wake()
	}
}

func (f *forwarder) wake() {
	select {
	case f.wakeCh <- struct{}{}:
	default:
	}
}

// bankAvailable: a bank's breaker half-opened or closed. Records that
// waited only because no bank was available are due at once.
func (f *forwarder) bankAvailable(bank string) {
	now := migrations.FormatTime(f.q.now())
	err := f.q.DB.Update(f.ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE saf_records SET next_attempt_at = ? WHERE status = 'queued' AND last_unavailable = 1
			AND (gateway = '' OR gateway = ?)`, now, bank)
		return err
	})
	if err != nil && f.ctx.Err() == nil {
		f.q.log().Warn("saf: make records due after a bank recovered", "gateway", bank, "err", err)
	}
	f.wake()
}

func (f *forwarder) estopChanged(state EStopState) {
	f.mu.Lock()
	if state == Stop {
		f.flightCancel()
		f.flightCtx, f.flightCancel = context.WithCancel(f.ctx)
	}
	if state == Go {
		f.guardTripped = false
		f.guardEvents = nil
	}
	f.mu.Unlock()
	f.wake()
}

// gate is the emergency stop, read from the database right before every
// bank call.
func (f *forwarder) gate(ctx context.Context) error {
	if e := f.q.EStop(ctx); e.State != Go {
		return fmt.Errorf("emergency stop is %s: %s", e.State, e.Reason)
	}
	return nil
}

func (f *forwarder) scan() {
	t := time.NewTicker(f.pol.Interval)
	defer t.Stop()
	for {
		select {
		case <-f.ctx.Done():
			for _, l := range f.lanes {
				close(l.ch)
			}
			return
		case <-t.C:
		case <-f.wakeCh:
		}
		if err := f.q.expire(f.ctx); err != nil && f.ctx.Err() == nil {
			f.q.log().Warn("saf: expire records", "err", err)
		}
		if f.q.EStop(f.ctx).State != Go {
			continue
		}
		f.dispatch()
	}
}

// dispatch hands due records to their banks' lanes without waiting: a
// full lane just means that bank is busy; other banks' records go on. It
// reads only as many records as the lanes can take (plus those already
// handed out and not yet claimed), and only their id and bank: it runs
// after every forward.
func (f *forwarder) dispatch() {
	free := 0
	for _, l := range f.lanes {
		free += cap(l.ch) - len(l.ch)
	}
	f.mu.Lock()
	handedOut := len(f.dispatched)
	f.mu.Unlock()
	if free == 0 {
		return
	}
	rows, err := f.q.DB.Read().QueryContext(f.ctx, `SELECT id, gateway FROM saf_records WHERE status = 'queued' AND next_attempt_at <= ?
		ORDER BY next_attempt_at LIMIT ?`, migrations.FormatTime(f.q.now()), free+handedOut)
	if err != nil {
		if f.ctx.Err() == nil {
			f.q.log().Warn("saf: scan queue", "err", err)
		}
		return
	}
	var recs []Record
	for rows.Next() {
		var r Record
		if err := rows.Scan(&r.ID, &r.Gateway); err != nil {
			rows.Close()
			f.q.log().Warn("saf: scan queue", "err", err)
			return
		}
		recs = append(recs, r)
	}
	rows.Close()
	preferred := f.q.Bank.Preferred()
	full := map[string]bool{}
	for _, r := range recs {
		bank := r.Gateway
		if bank == "" {
			bank = preferred
		}
		l := f.lanes[bank]
		if l == nil || full[bank] {
			continue
		}
		f.mu.Lock()
		if !f.dispatched[r.ID] {
			select {
			case l.ch <- r:
				f.dispatched[r.ID] = true
			default:
				full[bank] = true
			}
		}
		f.mu.Unlock()
	}
}

func (f *forwarder) work(l *lane) {
	for r := range l.ch {
		f.forward(l, r)
		f.mu.Lock()
		delete(f.dispatched, r.ID)
		f.mu.Unlock()
		f.wake()
	}
}

// forward sends one record to l's bank and records the outcome.
func (f *forwarder) forward(l *lane, r Record) {
	if err := l.limiter.AcquirePermit(f.ctx); err != nil {
		return
	}
	if f.q.EStop(f.ctx).State != Go {
		return
	}
	// Claim and pin: the bank is on disk before it is called.
	now := f.q.now()
	claimed, pinnedBefore := false, false
	err := f.q.DB.Update(f.ctx, func(tx *sql.Tx) error {
		cur, err := getRecordBy(tx, "id", r.ID)
		if err != nil {
			return err
		}
		if cur.Status != Queued || (cur.Gateway != "" && cur.Gateway != l.bank) {
			return nil // held, replayed or pinned elsewhere meanwhile
		}
		r = cur
		pinnedBefore = r.Gateway != ""
		r.Gateway = l.bank
		claimed = true
		return setStatus(tx, &r, Forwarding, now)
	})
	if err != nil || !claimed {
		if err != nil && f.ctx.Err() == nil {
			f.q.log().Warn("saf: claim record", "record", r.ID, "err", err)
		}
		return
	}
	card, err := f.q.Vault.Open(r.PaymentID, r.sealed)
	if err != nil {
		f.record(r, pinnedBefore, gateway.Authorization{}, &gateway.Error{Kind: gateway.KindRejected, Code: "card_data_unreadable",
			Gateway: l.bank, Err: err}, 0)
		return
	}
	f.mu.Lock()
	flight := f.flightCtx
	f.mu.Unlock()
	ctx, cancel := context.WithTimeout(gateway.WithGate(flight, f.gate), f.pol.CallTimeout)
	t0 := time.Now()
	auth, found := f.charged(ctx, l.bank, r, pinnedBefore)
	if !found {
		auth, err = f.q.Bank.AuthorizeAt(ctx, l.bank, gateway.AuthRequest{Key: r.idemKey, TerminalID: r.TerminalID,
			Reference: r.PaymentID, Amount: r.Amount, Currency: r.Currency, Capture: r.capture, Stored: r.advice, Card: card})
	}
	cancel()
	if err != nil && gateway.AsError(err) == nil {
		err = &gateway.Error{Kind: gateway.KindUnknown, Gateway: l.bank, Err: err}
	}
	// The outcome is committed while the worker moves on to its next
	// record: nobody waits for it, and until it commits the record stays
	// "forwarding", which a crash turns back into "queued" at the same
	// bank with the same key (the bank then replays its answer).
	took := time.Since(t0)
	f.recording.Add(1)
	go func() {
		defer f.recording.Done()
		f.record(r, pinnedBefore, auth, err, took)
	}()
}

// charged looks up, for a record pinned to bank (the bank may hold it),
// whether the bank already approved the payment, and returns that
// approval. A repeat under the same key would be answered the same way,
// but only while the bank keeps the key (the protocol promises 7 days; a
// record can wait longer for a manager), whereas the authorization stays
// findable by the payment's reference. Any failure of the lookup falls
// back to the same-key repeat.
func (f *forwarder) charged(ctx context.Context, bank string, r Record, pinned bool) (gateway.Authorization, bool) {
	if !pinned {
		return gateway.Authorization{}, false
	}
	auths, err := f.q.Bank.Find(ctx, bank, gateway.Lookup{Reference: r.PaymentID})
	if err != nil {
		return gateway.Authorization{}, false
	}
	for _, a := range auths {
		if a.Status == gateway.StatusApproved && a.Amount == r.Amount && a.Currency == r.Currency {
			return a, true
		}
	}
	return gateway.Authorization{}, false
}

// record commits a forward's outcome: the record, the payment, the
// attempt, in one transaction.
func (f *forwarder) record(r Record, pinnedBefore bool, auth gateway.Authorization, callErr error, took time.Duration) {
	now := f.q.now()
	e := gateway.AsError(callErr)
	outcome := "approved"
	var fr *orders.ForwardResult
	var failed bool
	// attempts counts the calls a bank answered or may have acted on: the
	// deciding one, and each with an unknown outcome (those count towards
	// held). A bank that provably did nothing is not an attempt.
	switch {
	case callErr == nil && auth.Status == gateway.StatusApproved:
		r.Attempts++
		r.Status, r.BankAuthID, r.ForwardedAt, r.sealed, r.LastError = Forwarded, auth.ID, now, nil, ""
		fr = &orders.ForwardResult{PaymentID: r.PaymentID, Gateway: r.Gateway, Auth: auth, Now: now}
	case callErr == nil || (e.Kind == gateway.KindRejected && e.Code != "idempotency_key_reuse"):
		code := auth.DeclineCode
		if callErr != nil {
			code = e.Code
			if code == "" {
				code = "rejected_by_bank"
			}
		}
		if code == "" {
			code = "do_not_honor"
		}
		outcome = "declined: " + code
		r.Attempts++
		r.Status, r.DeclineCode, r.ForwardedAt, r.sealed, r.BankAuthID = Declined, code, now, nil, auth.ID
		fr = &orders.ForwardResult{PaymentID: r.PaymentID, Gateway: r.Gateway, Auth: auth, DeclineCode: code, Now: now}
	case gateway.NothingDone(callErr) && e.Code != "idempotency_key_reuse":
		// The bank did nothing (or the emergency stop kept the call from
		// being made): not this record's fault; it waits for a bank, and
		// at least as long as the bank asked (429 Retry-After).
		outcome = "not sent: " + e.Kind.String()
		r.Status, r.LastError, r.lastUnavailable = Queued, callErr.Error(), true
		if !pinnedBefore {
			r.Gateway = ""
		}
		r.NextAttemptAt = now.Add(max(f.backoff(min(r.Attempts, 3)), e.RetryAfter))
	default:
		// Unknown at this bank (or a rejection that proves a bug, like
		// a reused key): the record stays pinned and counts an attempt.
		outcome = "unknown: " + callErr.Error()
		failed = true
		r.Attempts++
		r.Status, r.LastError, r.lastUnavailable = Queued, callErr.Error(), false
		r.NextAttemptAt = now.Add(f.backoff(r.Attempts))
		if r.Attempts >= f.pol.MaxAttempts {
			r.Status = Held
			outcome += fmt.Sprintf(" (held after %d attempts)", r.Attempts)
		}
	}
	to := r.Status
	r.Status = Forwarding
	err := f.q.DB.Update(context.WithoutCancel(f.ctx), func(tx *sql.Tx) error {
		if err := setStatus(tx, &r, to, now); err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO saf_attempts (record_id, at, gateway, outcome, detail, duration_ms) VALUES (?,?,?,?,?,?)`,
			r.ID, migrations.FormatTime(now), r.Gateway, outcome, auth.ID, took.Milliseconds()); err != nil {
			return err
		}
		if fr == nil {
			return nil
		}
		if fr.DeclineCode != "" {
			if _, err := tx.Exec(`INSERT INTO saf_blocked_cards (fingerprint, reason, at) VALUES (?, ?, ?)
				ON CONFLICT (fingerprint) DO NOTHING`, r.fingerprint, "declined after forward: "+fr.DeclineCode, migrations.FormatTime(now)); err != nil {
				return err
			}
		}
		return f.q.Payments.ApplyForward(tx, *fr)
	})
	if err != nil {
		f.q.log().Error("saf: record forward outcome", "record", r.ID, "payment_id", r.PaymentID, "err", err)
		return
	}
	forwards.Add(context.Background(), 1, metric.WithAttributes(attribute.String("gateway", r.Gateway),
		attribute.String("outcome", string(to))))
	switch to {
	case Declined:
		f.q.log().Warn("saf: payment declined after forward: the goods are gone, a manager must follow up",
			"record", r.ID, "payment_id", r.PaymentID, "gateway", r.Gateway, "decline_code", r.DeclineCode, "amount", r.Amount)
	case Held:
		f.q.log().Warn("saf: record held for a manager", "record", r.ID, "payment_id", r.PaymentID, "attempts", r.Attempts, "last_error", r.LastError)
	}
	f.guard(now, failed, fr != nil && fr.DeclineCode == "", r.Amount)
}

func (f *forwarder) backoff(attempts int) time.Duration {
	d := f.pol.BackoffMin << min(attempts, 20)
	d = min(d, f.pol.BackoffMax)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// guard is the runaway guard: too many failures or too much money
// forwarded in a window trips an emergency stop "pause", once, with an
// alert, until a manager sets the stop back to go.
func (f *forwarder) guard(now time.Time, failed, approved bool, amount int64) {
	f.mu.Lock()
	if f.guardTripped {
		f.mu.Unlock()
		return
	}
	ev := guardEvent{at: now, failed: failed}
	if approved {
		ev.amount = amount
	}
	f.guardEvents = append(f.guardEvents, ev)
	cut := 0
	for cut < len(f.guardEvents) && now.Sub(f.guardEvents[cut].at) > f.pol.GuardWindow {
		cut++
	}
	f.guardEvents = f.guardEvents[cut:]
	errs, total := 0, int64(0)
	for _, e := range f.guardEvents {
		if e.failed {
			errs++
		}
		total += e.amount
	}
	reason := ""
	switch {
	case errs > f.pol.GuardMaxErrors:
		reason = fmt.Sprintf("runaway guard: %d forwarding failures within %s (limit %d)", errs, f.pol.GuardWindow, f.pol.GuardMaxErrors)
	case f.pol.GuardMaxAmount > 0 && total > f.pol.GuardMaxAmount:
		reason = fmt.Sprintf("runaway guard: %d forwarded within %s (limit %d)", total, f.pol.GuardWindow, f.pol.GuardMaxAmount)
	}
	if reason != "" {
		f.guardTripped = true
	}
	f.mu.Unlock()
	if reason == "" {
		return
	}
	guardTrips.Add(context.Background(), 1)
	f.q.log().Error("ALERT: "+reason+"; forwarding paused until a manager sets the emergency stop to go", "state", Pause)
	if _, err := f.q.SetEStop(context.WithoutCancel(f.ctx), Pause, "runaway-guard", reason); err != nil {
		f.q.log().Error("saf: runaway guard could not pause forwarding", "err", err)
	}
}

// expire flags records that waited longer than the rules' max age.
func (q *Queue) expire(ctx context.Context) error {
	rules := q.Rules.withDefaults()
	now := q.now()
	var n int64
	err := q.DB.Update(ctx, func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE saf_records SET status = 'expired', updated_at = ?
			WHERE status IN ('queued', 'held') AND expire_exempt = 0 AND created_at < ?`,
			migrations.FormatTime(now), migrations.FormatTime(now.Add(-rules.MaxAge)))
		if err == nil {
			n, err = res.RowsAffected()
		}
		return err
	})
	if err != nil {
		return err
	}
	if n > 0 {
		expired.Add(ctx, n)
		q.log().Warn("saf: records expired: a manager must replay or write them off", "count", n, "max_age", rules.MaxAge.String())
	}
	return nil
}
