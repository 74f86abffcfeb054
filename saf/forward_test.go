package saf_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"storepay/gateway"
	"storepay/gateway/acquirer"
	"storepay/gateway/banksim"
	"storepay/migrations"
	"storepay/orders"
	"storepay/saf"
)

// failOnce fails the first forward outcome it is asked to commit, as a
// full disk or an I/O error would, and passes the rest on.
type failOnce struct {
	saf.Payments
	failed atomic.Bool
}

func (f *failOnce) ApplyForward(tx *sql.Tx, r orders.ForwardResult) error {
	if f.failed.CompareAndSwap(false, true) {
		return errors.New("disk I/O error")
	}
	return f.Payments.ApplyForward(tx, r)
}

type forwardEnv struct {
	sim    *banksim.Sim
	router *gateway.Router
	svc    *orders.Service
	q      *saf.Queue
}

// newForwardEnv is a queue over a real SQLite file and a real banksim
// behind the real router; the queue is not opened.
func newForwardEnv(t *testing.T) *forwardEnv {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := migrations.Open(ctx, filepath.Join(t.TempDir(), "storepay.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	sim := banksim.New(banksim.Config{APIKey: "key-a", Logger: log})
	t.Cleanup(func() { sim.Close() })
	u, err := sim.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	router, err := gateway.NewRouter([]gateway.BankSpec{{Name: "bank-a", Policy: gateway.Policy{ProbeInterval: -1},
		Endpoints: []gateway.Endpoint{acquirer.New(acquirer.Config{BaseURL: u, APIKey: "key-a", MerchantID: "store-042", Gateway: "bank-a"})}}}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(router.Close)
	vault, err := gateway.NewVault(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	svc := &orders.Service{DB: db, Bank: router, Vault: vault, Log: log}
	q := &saf.Queue{DB: db, Vault: vault, Bank: router, Payments: svc, Log: log,
		Rules:   saf.Rules{FloorLimit: 10000, TotalLimit: 500000},
		Forward: saf.ForwardPolicy{Interval: 10 * time.Millisecond}}
	svc.Offline = q
	return &forwardEnv{sim: sim, router: router, svc: svc, q: q}
}

// pay makes a payment of amount; its offline behaviour says how.
func (e *forwardEnv) pay(t *testing.T, key string, amount int64, behavior orders.OfflineBehavior) orders.Payment {
	t.Helper()
	ctx := context.Background()
	o, err := e.svc.CreateOrder(ctx, orders.NewOrder{Channel: orders.WalkIn, Currency: "USD", TerminalID: "lane-1",
		Lines: []orders.Line{{SKU: "sku", Description: "thing", Quantity: 1, UnitAmount: amount}}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.svc.Pay(ctx, orders.PayRequest{OrderID: o.ID, TerminalID: "lane-1", Request: orders.Request{Key: "lane-1\x00" + key}, Method: orders.Card,
		Amount: amount, OfflineBehavior: behavior, Card: &gateway.Card{PAN: "4242424242424242", ExpMonth: 12, ExpYear: 2030}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// The bank approved a forward, and committing its answer failed once:
// the forwarder commits it again instead of leaving the record
// "forwarding" (out of everyone's reach) until a restart.
func TestForwardOutcomeCommitIsRetried(t *testing.T) {
	ctx := context.Background()
	e := newForwardEnv(t)
	svc, q, sim := e.svc, e.q, e.sim
	payments := &failOnce{Payments: svc}
	q.Payments = payments
	p := e.pay(t, "k1", 800, orders.ForceOffline)
	if p.Status != orders.Stored {
		t.Fatalf("payment %+v: want stored", p)
	}
	if err := q.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur, err := svc.Payment(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if cur.Status == orders.Captured {
			break
		}
		if time.Now().After(deadline) {
			r, _ := q.RecordForPayment(ctx, p.ID)
			t.Fatalf("payment %s, record %s after a failed commit; want captured", cur.Status, r.Status)
		}
		time.Sleep(10 * time.Millisecond) // polling the outcome, not waiting out a race
	}
	if !payments.failed.Load() {
		t.Fatal("the commit never failed: this test proves nothing")
	}
	r, err := q.RecordForPayment(ctx, p.ID)
	if err != nil || r.Status != saf.Forwarded {
		t.Fatalf("record %+v, %v: want forwarded", r, err)
	}
	if n := sim.Ledger().ChargesFor(p.ID); n != 1 {
		t.Fatalf("charged %d times", n)
	}
}

// refusedLookups is the real router, except that every lookup is refused
// with a 404, as a bank without the lookup endpoint (or a proxy in front
// of it) answers.
type refusedLookups struct{ *gateway.Router }

func (refusedLookups) Find(context.Context, string, gateway.Lookup) ([]gateway.Authorization, error) {
	return nil, &gateway.Error{Kind: gateway.KindRejected, Code: "not_found", Err: errors.New("HTTP 404")}
}

// A payment stored after its bank's answer was lost is pinned to that
// bank. A refused lookup there is not the bank's answer to the payment:
// the record waits and nothing is sent, declined or erased.
func TestRefusedLookupIsNotADecline(t *testing.T) {
	ctx := context.Background()
	e := newForwardEnv(t)
	if err := e.sim.SetFaults("", banksim.Faults{DropAfterApply: &banksim.Fault{}}); err != nil {
		t.Fatal(err)
	}
	p := e.pay(t, "k1", 800, orders.PreferOnline)
	if p.Status != orders.Stored || p.Gateway != "bank-a" {
		t.Fatalf("payment %+v: want stored, pinned to bank-a", p)
	}
	if err := e.sim.ClearFaults(); err != nil {
		t.Fatal(err)
	}
	sent := e.sim.Ledger().Calls("", banksim.EndpointAuthorize)
	e.q.Bank = refusedLookups{e.router}
	if err := e.q.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.q.Close)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r, err := e.q.RecordForPayment(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != saf.Queued && r.Status != saf.Forwarding {
			t.Fatalf("record %s (%s) after a refused lookup; want it waiting", r.Status, r.DeclineCode)
		}
		if strings.Contains(r.LastError, "look up") {
			if r.Attempts != 0 {
				t.Fatalf("a lookup that sent nothing counted %d attempts", r.Attempts)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no lookup was tried: %+v", r)
		}
		time.Sleep(10 * time.Millisecond) // polling the record, not waiting out a race
	}
	if cur, _ := e.svc.Payment(ctx, p.ID); cur.Status != orders.Stored {
		t.Fatalf("payment %s after a refused lookup; want stored", cur.Status)
	}
	if n := e.sim.Ledger().Calls("", banksim.EndpointAuthorize); n != sent {
		t.Fatalf("the authorization was sent %d more times", n-sent)
	}
}

// Step forwards what is due in the caller's goroutine, at the queue's
// clock: a stored payment is forwarded by one step, without the
// forwarder's goroutines, and a record not yet due is left for a later
// step.
func TestStepForwardsWhatIsDue(t *testing.T) {
	e := newForwardEnv(t)
	ctx := context.Background()
	now := time.Now()
	e.q.Now = func() time.Time { return now }
	e.svc.Now = e.q.Now
	p := e.pay(t, "step-1", 900, orders.ForceOffline)
	if p.Status != orders.Stored {
		t.Fatalf("payment %s, want stored", p.Status)
	}
	if err := e.q.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := e.q.RecordForPayment(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	// Not due yet: a step an instant before sends nothing.
	now = r.NextAttemptAt.Add(-time.Millisecond)
	if n, err := e.q.Step(ctx); err != nil || n != 0 {
		t.Fatalf("a step before the record is due sent %d (err %v)", n, err)
	}
	now = r.NextAttemptAt
	if n, err := e.q.Step(ctx); err != nil || n != 1 {
		t.Fatalf("step sent %d (err %v), want 1", n, err)
	}
	got, err := e.svc.Payment(ctx, p.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != orders.Captured || e.sim.Ledger().ChargesFor(p.ID) != 1 {
		t.Fatalf("after the step: %s, charged %d times", got.Status, e.sim.Ledger().ChargesFor(p.ID))
	}
}

// After a restart the forwarder starts on the oldest payments: with
// records taken at shuffled moments (made in another order than their
// age) and one forward at a time, the bank receives the advices oldest
// first.
func TestForwarderStartsOnTheOldest(t *testing.T) {
	e := newForwardEnv(t)
	base := time.Now().Add(-time.Hour)
	var now time.Time
	e.q.Now = func() time.Time { return now }
	e.svc.Now = e.q.Now
	ages := []int{3, 0, 4, 1, 2} // minutes after base, in the order the payments are made
	made := map[int]string{}
	for i, m := range ages {
		now = base.Add(time.Duration(m) * time.Minute)
		p := e.pay(t, fmt.Sprintf("old-%d", i), int64(500+i), orders.ForceOffline)
		if p.Status != orders.Stored {
			t.Fatalf("payment %d: %s, want stored", i, p.Status)
		}
		made[m] = p.ID
	}
	now = time.Now()
	e.q.Forward.Concurrency = 1
	if err := e.q.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.q.Close)
	var got []string
	deadline := time.Now().Add(10 * time.Second)
	for len(got) < len(ages) {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d advices reached the bank", len(got), len(ages))
		}
		time.Sleep(10 * time.Millisecond)
		got = got[:0]
		for _, a := range e.sim.Ledger().Authorizations {
			if a.Stored {
				got = append(got, a.Reference)
			}
		}
	}
	for m := range ages {
		if got[m] != made[m] {
			t.Fatalf("advices arrived in the order %v, want oldest first %v", got, []string{made[0], made[1], made[2], made[3], made[4]})
		}
	}
}
