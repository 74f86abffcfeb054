package saf

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
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

// Open starts the forwarder: [Queue.Recover], then a scanner and a small
// pool of workers per bank that run [Queue.Step]'s work on a timer, at
// once when something is queued or a bank comes back.
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
	if err := q.Recover(context.Background()); err != nil {
		return err
	}
	f := q.forwarder()
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
	q.Bank.OnAvailable(f.bankAvailable)
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		f.scan()
	}()
	return nil
}

// forwarder returns the queue's forwarder, made without its goroutines
// on first use: [Queue.Step] drives it by hand, Open adds the workers.
func (q *Queue) forwarder() *forwarder {
	q.fwdOnce.Do(func() {
		ctx, cancel := context.WithCancel(context.Background())
		f := &forwarder{q: q, pol: q.Forward.withDefaults(), ctx: ctx, cancel: cancel, wakeCh: make(chan struct{}, 1),
			lanes: map[string]*lane{}, dispatched: map[string]bool{}}
		f.flightCtx, f.flightCancel = context.WithCancel(ctx)
		q.fwd = f
	})
	return q.fwd
}

// Step runs one pass of the forwarder now, at the queue's clock, in the
// caller's goroutine: it expires what waited too long and, unless the
// emergency stop holds forwarding, forwards every due record, bank by
// bank in priority order, one at a time, recording each outcome before
// the next. It returns how many records it sent to a bank. Tests and the
// simulator step the forwarder this way instead of waiting for its timer.
func (q *Queue) Step(ctx context.Context) (int, error) {
	f := q.forwarder()
	if err := q.expire(ctx); err != nil {
		return 0, err
	}
	sent := 0
	preferred := q.Bank.Preferred()
	for _, bank := range q.Bank.Banks() {
		if q.EStop(ctx).State != Go {
			return sent, nil
		}
		now := migrations.FormatTime(q.now())
		ids, err := f.due(bank, now, 1000)
		if err == nil && bank == preferred {
			var unpinned []string
			unpinned, err = f.due("", now, 1000)
			ids = append(ids, unpinned...)
		}
		if err != nil {
			return sent, err
		}
		for _, id := range ids {
			if ctx.Err() != nil {
				return sent, ctx.Err()
			}
			if f.forward(bank, nil, Record{ID: id}, true) {
				sent++
			}
		}
	}
	return sent, nil
}

// Recover puts the records a crash left "forwarding" back in the queue,
// still pinned to their bank (the bank may have taken them: only a repeat
// there, or its records, will tell), and holds for a manager the records
// pinned to a bank that is no longer configured. Open runs it first.
func (q *Queue) Recover(ctx context.Context) error {
	now := migrations.FormatTime(q.now())
	var orphans int64
	err := q.DB.Update(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`UPDATE saf_records SET status = 'queued', next_attempt_at = ?, updated_at = ? WHERE status = 'forwarding'`, now, now); err != nil {
			return err
		}
		// A record pinned to a bank that is no longer configured can go
		// nowhere else (that bank may hold it): a manager must see it.
		banks, err := json.Marshal(q.Bank.Banks())
		if err != nil {
			return err
		}
		res, err := tx.Exec(`UPDATE saf_records SET status = 'held', updated_at = ?,
			last_error = 'pinned to ' || gateway || ', which is not configured: that bank may hold this payment',
			last_error_code = 'bank_not_configured'
			WHERE status = 'queued' AND gateway <> '' AND gateway NOT IN (SELECT value FROM json_each(?))`, now, string(banks))
		if err == nil {
			orphans, err = res.RowsAffected()
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("saf: recover records left forwarding: %w", err)
	}
	if orphans > 0 {
		q.log().Error("ALERT: saf: records pinned to a bank that is not configured are held for a manager", "count", orphans)
	}
	return nil
}

// Close stops the forwarder: forwards in flight finish (their outcome is
// recorded), nothing new starts.
func (q *Queue) Close() {
	if q.unobserve != nil {
		q.unobserve()
	}
	q.forwarder().cancel()
	q.fwd.wg.Wait()
	q.fwd.recording.Wait()
}

func (q *Queue) wake() {
	q.forwarder().wake()
}

func (f *forwarder) wake() {
	select {
	case f.wakeCh <- struct{}{}:
	default:
	}
}

// bankAvailable: a bank's breaker half-opened or closed.
func (f *forwarder) bankAvailable(bank string) {
	if err := f.q.BankAvailable(f.ctx, bank); err != nil && f.ctx.Err() == nil {
		f.q.log().Warn("saf: make records due after a bank recovered", "gateway", bank, "err", err)
	}
	f.wake()
}

// BankAvailable makes the records that waited only because no bank was
// available due now: bank takes calls again.
func (q *Queue) BankAvailable(ctx context.Context, bank string) error {
	now := migrations.FormatTime(q.now())
	return q.DB.Update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE saf_records SET next_attempt_at = ? WHERE status = 'queued' AND last_unavailable = 1
			AND (gateway = '' OR gateway = ?)`, now, bank)
		return err
	})
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

// dispatch hands due records to their banks' lanes without waiting. Each
// lane is filled from its own due records (pinned to its bank, or unpinned
// when it is the preferred bank): a busy bank, or records pinned to one,
// never keep another bank's records waiting. It reads only as many
// records as a lane can take (plus those already handed out and not yet
// claimed), and only their ids: it runs after every forward.
func (f *forwarder) dispatch() {
	now := migrations.FormatTime(f.q.now())
	preferred := f.q.Bank.Preferred()
	f.mu.Lock()
	handedOut := len(f.dispatched)
	f.mu.Unlock()
	for bank, l := range f.lanes {
		free := cap(l.ch) - len(l.ch)
		if free == 0 {
			continue
		}
		ids, err := f.due(bank, now, free+handedOut)
		if err == nil && bank == preferred {
			var unpinned []string
			unpinned, err = f.due("", now, free+handedOut)
			ids = append(ids, unpinned...)
		}
		if err != nil {
			if f.ctx.Err() == nil {
				f.q.log().Warn("saf: scan queue", "gateway", bank, "err", err)
			}
			return
		}
		f.mu.Lock()
	fill:
		for _, id := range ids {
			if f.dispatched[id] {
				continue
			}
			select {
			case l.ch <- Record{ID: id}:
				f.dispatched[id] = true
			default:
				break fill
			}
		}
		f.mu.Unlock()
	}
}

// due lists up to limit ids of queued records pinned to bank ("" for the
// unpinned ones) whose next attempt is due at now, oldest first.
func (f *forwarder) due(bank, now string, limit int) ([]string, error) {
	rows, err := f.q.DB.Read().QueryContext(f.ctx, `SELECT id FROM saf_records
		WHERE status = 'queued' AND gateway = ? AND next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?`, bank, now, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

func (f *forwarder) work(l *lane) {
	for r := range l.ch {
		f.forward(l.bank, l.limiter, r, false)
		f.mu.Lock()
		delete(f.dispatched, r.ID)
		f.mu.Unlock()
		f.wake()
	}
}

// forward sends one record to bank and records the outcome: at once
// when sync (a step), else while the worker moves on. A limiter, when
// given, spaces the forwards. It reports whether the record was sent.
func (f *forwarder) forward(bank string, limiter ratelimiter.RateLimiter[any], r Record, sync bool) bool {
	if limiter != nil {
		if err := limiter.AcquirePermit(f.ctx); err != nil {
			return false
		}
	}
	if f.q.EStop(f.ctx).State != Go {
		return false
	}
	// Claim and pin: the bank is on disk before it is called.
	now := f.q.now()
	claimed, pinnedBefore := false, false
	err := f.q.DB.Update(f.ctx, func(tx *sql.Tx) error {
		cur, err := getRecordBy(tx, "id", r.ID)
		if err != nil {
			return err
		}
		if cur.Status != Queued || (cur.Gateway != "" && cur.Gateway != bank) || cur.NextAttemptAt.After(now) {
			return nil // held, pinned elsewhere or put off (a "not sent" since it was listed) meanwhile
		}
		r = cur
		pinnedBefore = r.Gateway != ""
		r.Gateway = bank
		claimed = true
		return setStatus(tx, &r, Forwarding, now)
	})
	if err != nil || !claimed {
		if err != nil && f.ctx.Err() == nil {
			f.q.log().Warn("saf: claim record", "record", r.ID, "err", err)
		}
		return false
	}
	card, err := f.q.Vault.Open(r.PaymentID, r.sealed)
	if err != nil {
		f.holdUnreadable(r, pinnedBefore, err)
		return false
	}
	f.mu.Lock()
	flight := f.flightCtx
	f.mu.Unlock()
	ctx, cancel := context.WithTimeout(gateway.WithGate(flight, f.gate), f.pol.CallTimeout)
	t0 := time.Now()
	auth, found, err := f.charged(ctx, bank, r, pinnedBefore)
	if !found && err == nil {
		auth, err = f.q.Bank.AuthorizeAt(ctx, bank, gateway.AuthRequest{Key: r.idemKey, TerminalID: r.TerminalID,
			Reference: r.PaymentID, Amount: r.Amount, Currency: r.Currency, Capture: r.capture, Stored: r.advice, Card: card})
	}
	cancel()
	if err != nil && gateway.AsError(err) == nil {
		err = &gateway.Error{Kind: gateway.KindUnknown, Gateway: bank, Err: err}
	}
	// The outcome is committed while the worker moves on to its next
	// record: nobody waits for it, and until it commits the record stays
	// "forwarding", which a crash turns back into "queued" at the same
	// bank with the same key (the bank then replays its answer).
	took := time.Since(t0)
	if sync {
		f.record(r, pinnedBefore, auth, err, took)
		return true
	}
	f.recording.Add(1)
	go func() {
		defer f.recording.Done()
		f.record(r, pinnedBefore, auth, err, took)
	}()
	return true
}

// charged looks up, for a record pinned to bank (the bank may hold it),
// whether the bank already decided the payment, and returns its
// decision: an approval, else a decline. A repeat under the same key would be answered the same way,
// but only while the bank keeps the key (the protocol promises 7 days; a
// record can wait longer for a manager), whereas the authorization stays
// findable by the payment's reference. So a lookup that fails sends
// nothing, and whatever the bank said (a refusal too) is not its answer
// to the payment: the record waits, as for a bank that is down, and looks
// again; no attempt is counted, nothing was sent.
func (f *forwarder) charged(ctx context.Context, bank string, r Record, pinned bool) (gateway.Authorization, bool, error) {
	if !pinned {
		return gateway.Authorization{}, false, nil
	}
	auths, err := f.q.Bank.Find(ctx, bank, gateway.Lookup{Reference: r.PaymentID})
	if gateway.NoLookup(err) {
		// No lookup in this protocol (ISO 8583): the repeat under the
		// same key carries the same RRN, which the bank answers with its
		// first answer.
		return gateway.Authorization{}, false, nil
	}
	if err != nil && orders.Planted(orders.BugResendAfterFailedLookup) {
		return gateway.Authorization{}, false, nil
	}
	if err != nil {
		return gateway.Authorization{}, false, &gateway.Error{Kind: gateway.KindUnavailable, Gateway: bank,
			Err: fmt.Errorf("%w: %s: %w", gateway.ErrLookupFailed, bank, err)}
	}
	var declined *gateway.Authorization
	for _, a := range auths {
		if a.Amount != r.Amount || a.Currency != r.Currency {
			continue
		}
		switch a.Status {
		case gateway.StatusApproved:
			return a, true, nil
		case gateway.StatusDeclined:
			declined = &a
		}
	}
	if declined != nil {
		// The bank decided the very request this record repeats, and
		// declined it: that is its answer (a bank that kept a failure as
		// the key's answer would never give it to a repeat).
		return *declined, true, nil
	}
	return gateway.Authorization{}, false, nil
}

// holdUnreadable holds a claimed record whose card data the vault cannot
// open (the card key is not the one that sealed it): nothing is sent, the
// sealed card is kept, and a manager releases the record once the right
// STOREPAY_CARD_KEY is back.
func (f *forwarder) holdUnreadable(r Record, pinnedBefore bool, openErr error) {
	now := f.q.now()
	if !pinnedBefore {
		r.Gateway = ""
	}
	r.LastErrorCode = "card_key_mismatch"
	r.LastError = "card data cannot be opened with the configured STOREPAY_CARD_KEY: start storepay with the key that sealed it, then release this record"
	r.lastUnavailable = false
	if !f.commitOutcome(r.ID, r.PaymentID, func(tx *sql.Tx) error {
		w := r
		if err := setStatus(tx, &w, Held, now); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO saf_attempts (record_id, at, gateway, outcome, detail, duration_ms) VALUES (?,?,?,?,?,0)`,
			r.ID, migrations.FormatTime(now), r.Gateway, "not sent: card data unreadable", "")
		return err
	}) {
		return // left forwarding: the next start puts it back in the queue
	}
	f.q.log().Error("ALERT: saf: card data cannot be opened with the configured key; record held for a manager",
		"record", r.ID, "payment_id", r.PaymentID, "err", openErr)
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
		r.Status, r.BankAuthID, r.ForwardedAt, r.sealed = Forwarded, auth.ID, now, nil
		r.noteError(nil)
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
		r.Status, r.lastUnavailable = Queued, true
		r.noteError(callErr)
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
		r.Status, r.lastUnavailable = Queued, false
		r.noteError(callErr)
		r.NextAttemptAt = now.Add(f.backoff(r.Attempts))
		if r.Attempts >= f.pol.MaxAttempts {
			r.Status = Held
			outcome += fmt.Sprintf(" (held after %d attempts)", r.Attempts)
		}
	}
	to := r.Status
	r.Status = Forwarding
	if !f.commitOutcome(r.ID, r.PaymentID, func(tx *sql.Tx) error {
		w := r // setStatus changes its record; a retry starts from "forwarding" again
		if err := setStatus(tx, &w, to, now); err != nil {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO saf_attempts (record_id, at, gateway, outcome, detail, duration_ms) VALUES (?,?,?,?,?,?)`,
			r.ID, migrations.FormatTime(now), r.Gateway, outcome, auth.ID, took.Milliseconds()); err != nil {
			return err
		}
		if fr == nil {
			return nil
		}
		if cardIsBad[fr.DeclineCode] {
			if _, err := tx.Exec(`INSERT INTO saf_blocked_cards (fingerprint, reason, at) VALUES (?, ?, ?)
				ON CONFLICT (fingerprint) DO NOTHING`, r.fingerprint, "declined after forward: "+fr.DeclineCode, migrations.FormatTime(now)); err != nil {
				return err
			}
		}
		return f.q.Payments.ApplyForward(tx, *fr)
	}) {
		return
	}
	r.Status = to
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

// cardIsBad holds the decline codes that condemn the card itself: lost or
// stolen, expired, invalid. Such a card is refused offline from then on.
// A card declined for its funds or with a plain do_not_honor may pay
// tomorrow, and the contract's offline rules (floor and total limits)
// are what bound the store's exposure to it; the velocity limits, when
// configured, bound it per card.
var cardIsBad = map[string]bool{"lost_or_stolen": true, "expired_card": true, "invalid_card": true}

// commitOutcome commits a bank's answer to a forward, retrying until it
// is on disk: the bank has acted, so the answer must not be dropped, and
// until it commits the record stays "forwarding", out of the manager's
// and the forwarder's reach. It gives up only when the forwarder stops;
// the next start then puts the record back in the queue, pinned, and the
// same-key repeat or the lookup learns the answer again.
func (f *forwarder) commitOutcome(id, paymentID string, fn func(*sql.Tx) error) bool {
	delay := 50 * time.Millisecond
	for {
		err := f.q.DB.Update(context.WithoutCancel(f.ctx), fn)
		if err == nil {
			return true
		}
		f.q.log().Error("saf: record forward outcome; retrying", "record", id, "payment_id", paymentID, "err", err, "retry_in", delay.String())
		if f.q.sleep(f.ctx, delay) != nil {
			return false
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func (f *forwarder) backoff(attempts int) time.Duration {
	d := f.pol.BackoffMin << min(attempts, 20)
	d = min(d, f.pol.BackoffMax)
	return d/2 + time.Duration(f.q.jitter(int64(d/2)+1))
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
		reason = fmt.Sprintf("runaway guard: %s forwarded within %s (limit %s)", f.q.Rules.Money(total), f.pol.GuardWindow, f.q.Rules.Money(f.pol.GuardMaxAmount))
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
