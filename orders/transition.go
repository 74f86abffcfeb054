package orders

import (
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Request is a terminal's request as the domain sees its idempotency:
// which request it is, what it asked, and where its answer is kept. The
// web layer's idempotency (web/idempotency.go) makes it; internal callers
// leave it zero.
type Request struct {
	// Key identifies the request: the device and its Idempotency-Key. A
	// repeat resumes, or answers with, what the first made.
	Key string
	// Hash is the keyed hash of what was asked: it tells a repeat from a
	// reuse of the key (see [SameHashKey]).
	Hash string
	// Reply, when set, stores the terminal's answer in the transaction
	// that commits the outcome it describes.
	Reply Reply
}

// Reply stores the answer a terminal will get for its request, in the
// transaction that commits the outcome: a request then costs one durable
// write, and an outcome and its recorded answer can never disagree.
// result is the Order or Payment the operation returns.
type Reply interface {
	Store(tx *sql.Tx, result any) error
}

// opStart is the operation an event starts.
type opStart struct {
	key    string // the downstream idempotency key (keys.go)
	opKey  string // the terminal request that asked for it; "" for storepay's own
	amount int64
	tip    int64
}

// move is one transition as its caller asks for it.
type move struct {
	ev     Event
	detail string
	// start is the operation ev starts, when its row starts one.
	start *opStart
	// lease, when set, keeps the payment's lease for this process until
	// then: a live request that calls the bank next. Any other transition
	// releases it.
	lease time.Time
	// reply stores the terminal's answer in the same transaction.
	reply Reply
}

// transition moves p by m.ev. It is the one place a payment's state
// changes: it checks the move against [Machine], sets p's status and
// operation, and writes, in tx, the payment, the change with its event
// (self-loops without a detail write none), the order's paid amount when
// the status changed, and the terminal's answer when m.reply is set.
func (s *Service) transition(tx *sql.Tx, p *Payment, m move, now time.Time) error {
	from := p.State()
	to, err := next(from, m.ev)
	if err != nil {
		return fmt.Errorf("payment %s: %w", p.ID, err)
	}
	starts := to.Op != OpNone && to.Op != from.Op
	switch {
	case starts && m.start == nil:
		return fmt.Errorf("payment %s: %s starts %s without a key", p.ID, m.ev, to.Op)
	case starts:
		p.pendingKey, p.pendingAmount, p.pendingTip = m.start.key, m.start.amount, m.start.tip
		p.pendingOpKey, p.keyOp = m.start.opKey, to.Op
		if to.Op != OpAuthorize {
			if err := rememberKey(tx, m.start.opKey, p.ID, to.Op, m.start.amount, m.start.tip, now); err != nil {
				return err
			}
		}
		p.pendingSince, p.resolveAttempts, p.resolveAfter = now, 0, time.Time{}
		p.noteError(nil)
	case to.Op == OpNone && from.Op != OpNone:
		// The operation ended. pendingOpKey and keyOp stay: a repeat of
		// the request that finished it is answered with the result.
		p.pendingKey, p.pendingAmount, p.pendingTip = "", 0, 0
		p.pendingSince, p.resolveAttempts, p.resolveAfter = time.Time{}, 0, time.Time{}
	}
	p.Status, p.PendingOp = to.Status, to.Op
	if to.Op != OpAuthorize && to.Op != OpReverse {
		// The card is kept sealed only while a repeat of the authorization
		// may be needed; store-and-forward keeps its own copy.
		p.sealed = nil
	}
	switch {
	case !m.lease.IsZero():
		p.leaseOwner, p.leaseUntil = s.leaseToken(), m.lease
	case m.ev != EvBankChosen: // the bank is written down mid-call: the lease stays
		p.leaseOwner, p.leaseUntil = "", time.Time{}
	}
	if to.Status == Captured && from.Status != Captured && p.CapturedAt.IsZero() {
		p.CapturedAt = now
	}
	p.UpdatedAt = now
	if from.Status == "" {
		if err := insertPayment(tx, *p); err != nil {
			return err
		}
	} else if err := updatePayment(tx, p); err != nil {
		return err
	}
	if from != to || m.detail != "" || m.ev == EvBankChosen {
		if err := insertEvent(tx, p.ID, from, to, m.ev, m.detail, now); err != nil {
			return err
		}
	}
	if from.Status != to.Status {
		if _, err := settleOrder(tx, p.OrderID, now); err != nil {
			return err
		}
	}
	if m.reply != nil {
		return m.reply.Store(tx, *p)
	}
	return nil
}

// leaseMargin is added to an operation's budget for its lease: the live
// request records its outcome within its budget, and the resolver must
// not take the operation before.
const leaseMargin = 30 * time.Second

func (s *Service) leaseFor(now time.Time, budget time.Duration) time.Time {
	return now.Add(budget + leaseMargin)
}

// leased reports whether a live request of this process holds p's lease
// now. A lease written by another incarnation belongs to a process that
// is gone: one storepay runs per database (the lock beside it), and a
// new start is a new incarnation. A lease whose holder returned without
// clearing it (its outcome write failed) binds nobody either (letGo).
func (s *Service) leased(p Payment, now time.Time) bool {
	return strings.HasPrefix(p.leaseOwner, s.incarnation()+"/") && now.Before(p.leaseUntil) && !s.returned(p.leaseOwner)
}

// leaseToken names one holding of a lease: this incarnation and a
// number, so that a holder lets go of its own lease and nobody else's.
func (s *Service) leaseToken() string {
	return fmt.Sprintf("%s/%d", s.incarnation(), s.leases.Add(1))
}

// claim takes p's lease for the resolver, in tx. It writes the lease
// only: the payment's state does not change.
func (s *Service) claim(tx *sql.Tx, p *Payment, until time.Time) error {
	p.leaseOwner, p.leaseUntil = s.leaseToken(), until
	_, err := tx.Exec(`UPDATE payments SET lease_owner = ?, lease_until = ? WHERE id = ?`, p.leaseOwner, ts(until), p.ID)
	return err
}

// errReuse: an Idempotency-Key that made an order or payment comes back
// with another request (after a crash lost the stored answer).
var errReuse = &Error{Kind: KindInvalid, Code: "idempotency_key_reuse", Message: "this Idempotency-Key was used for a different request"}

// errLeaseLost: the caller's lease on the payment was taken over (it ran
// past it, and the resolver or the request's repeat took the operation
// on): its outcome is not written, since the new holder's is the one
// that counts. The request's repeat hears the payment as it ends.
var errLeaseLost = &Error{Kind: KindConflict, Code: "payment_in_progress", Transient: true,
	Message: "this payment's operation was taken over while it ran; repeat the request to hear its outcome"}

// holds reports whether token still holds p's lease: the fence every
// outcome write passes, so that of two holders of one operation (the
// first ran past its lease) only the last writes what the bank did.
func holds(p Payment, token string) bool { return token != "" && p.leaseOwner == token }

// errKeyInUse: the request under this key is still running.
var errKeyInUse = &Error{Kind: KindConflict, Code: "idempotency_key_in_use", Transient: true,
	Message: "a request with this Idempotency-Key is still running; retry shortly"}

// SameHashKey reports whether two request hashes were made under the same
// key, so that their difference means two different requests. A request
// hash is "h1.<key id>.<mac>" (see web); an erased one (""), or one made
// under another card key, cannot tell: the record it guards is compared
// with the request instead.
func SameHashKey(a, b string) bool {
	ka, ok1 := hashKeyID(a)
	kb, ok2 := hashKeyID(b)
	return ok1 && ok2 && ka == kb
}

func hashKeyID(h string) (string, bool) {
	rest, ok := strings.CutPrefix(h, "h1.")
	if !ok {
		return "", false
	}
	id, _, ok := strings.Cut(rest, ".")
	return id, ok
}

// rememberKey records that the request under opKey started op on a
// payment (see migration 0020): its repeat is recognised after the
// payment's later operations and after its stored answer was pruned.
func rememberKey(tx *sql.Tx, opKey, paymentID string, op Op, amount, tip int64, now time.Time) error {
	if opKey == "" {
		return nil
	}
	_, err := tx.Exec(`INSERT INTO operation_keys (op_key, payment_id, op, amount, tip, created_at) VALUES (?,?,?,?,?,?)
		ON CONFLICT (op_key) DO UPDATE SET payment_id = excluded.payment_id, op = excluded.op, amount = excluded.amount,
		tip = excluded.tip`, opKey, paymentID, op, amount, tip, ts(now))
	return err
}

// forgetKey gives up the key of a request that ended not done: its
// repeat asks the bank again.
func forgetKey(tx *sql.Tx, opKey string) error {
	if opKey == "" {
		return nil
	}
	_, err := tx.Exec(`DELETE FROM operation_keys WHERE op_key = ?`, opKey)
	return err
}

// keyMade is what a request key started, per operation_keys.
type keyMade struct {
	paymentID   string
	op          Op
	amount, tip int64
}

func keyMadeBy(tx *sql.Tx, opKey string) (keyMade, bool, error) {
	var k keyMade
	if opKey == "" {
		return k, false, nil
	}
	err := tx.QueryRow(`SELECT payment_id, op, amount, tip FROM operation_keys WHERE op_key = ?`, opKey).
		Scan(&k.paymentID, &k.op, &k.amount, &k.tip)
	if errors.Is(err, sql.ErrNoRows) {
		return k, false, nil
	}
	return k, err == nil, err
}
