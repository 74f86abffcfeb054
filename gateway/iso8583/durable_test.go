package iso8583

import (
	"context"
	"path/filepath"
	"testing"

	"storepay/gateway"
	"storepay/migrations"
)

// Two endpoints of one gateway (its failover URLs) share the store: the
// record one of them wrote with the bank's answer is not overwritten by
// the other's copy without one, and a reversal by reference reads the
// answer. Seed 363416 of the simulator: a "not sent" written over an
// approval, the reversal skipped it, the sale stayed charged.
func TestStoredAnswerIsNotOverwrittenByAStaleCopy(t *testing.T) {
	ctx := context.Background()
	db, err := migrations.Open(ctx, filepath.Join(t.TempDir(), "sp.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d := &Durable{DB: db, Gateway: "bank-b", Terminal: "SP042001"}
	rec := Record{ID: "615723000005", Reference: "pay_1", Op: OpSale, Status: RecordUnknown, Amount: 14472, Currency: "USD"}
	if err := d.SaveRecord(ctx, rec); err != nil {
		t.Fatal(err)
	}
	approved := rec
	approved.Status, approved.AuthCode = gateway.StatusApproved, "A1B2C3"
	if err := d.SaveRecord(ctx, approved); err != nil {
		t.Fatal(err)
	}
	for _, stale := range []string{RecordNotSent, RecordUnknown} {
		old := rec
		old.Status = stale
		if err := d.SaveRecord(ctx, old); err != nil {
			t.Fatal(err)
		}
		got, ok, err := d.LoadRecord(ctx, rec.ID)
		if err != nil || !ok {
			t.Fatalf("load: %v %v", ok, err)
		}
		if got.Status != gateway.StatusApproved {
			t.Errorf("after a copy %s was saved the record is %s, want approved", stale, got.Status)
		}
	}
	// A definite answer still replaces another (a reversal acknowledged).
	reversed := approved
	reversed.Status = gateway.StatusReversed
	if err := d.SaveRecord(ctx, reversed); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := d.LoadRecord(ctx, rec.ID); got.Status != gateway.StatusReversed {
		t.Errorf("after the reversal the record is %s, want reversed", got.Status)
	}

	// An endpoint whose memory holds the stale copy reads the store's
	// answer when it looks the payment's records up.
	ep := &Endpoint{store: d, records: map[string]*Record{}, max: 16}
	stale := rec
	stale.Status = RecordNotSent
	ep.put(stale)
	recs := ep.Records("pay_1")
	if len(recs) != 1 || recs[0].Status != gateway.StatusReversed {
		t.Errorf("the endpoint's records of the payment: %+v, want the stored answer (reversed)", recs)
	}
}
