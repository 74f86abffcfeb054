package slo_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"storepay/migrations"
	"storepay/slo"
)

// A run that never stopped cleanly is recorded as a crash at the moment it
// was last seen alive, and the report counts the gap as down time.
func TestRecorderCrashAndBreaker(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "storepay.db")
	db, err := migrations.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var clockNanos atomic.Int64 // the recorder's writer reads it
	start := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	clockNanos.Store(start.UnixNano())
	now := func() time.Time { return time.Unix(0, clockNanos.Load()).UTC() }
	advance := func(d time.Duration) { clockNanos.Add(int64(d)) }
	first := &slo.Recorder{DB: db, Now: now, AliveEvery: -1}
	if err := first.Open(ctx); err != nil {
		t.Fatal(err)
	}
	advance(time.Minute)
	first.Gateway("acq-a", "closed", "open")
	// The writer flushes it (and notes 08:01 as alive) in the background.
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int
		if err := db.Read().QueryRow(`SELECT count(*) FROM availability_events WHERE source = 'gateway'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the breaker change was not written within 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// Killed: no Close. The next run starts 2 minutes later.
	advance(2 * time.Minute)
	second := &slo.Recorder{DB: db, Now: now, AliveEvery: -1}
	if err := second.Open(ctx); err != nil {
		t.Fatal(err)
	}
	advance(time.Minute)
	second.Gateway("acq-a", "open", "closed")
	if err := second.Close(ctx); err != nil {
		t.Fatal(err)
	}
	rdb, err := slo.OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	rep, err := slo.Compute(ctx, rdb, slo.Options{From: start, To: start.Add(time.Hour), Banks: []string{"acq-a"}})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, in := range rep.Incidents {
		kinds = append(kinds, in.Kind)
	}
	// acq-a out 08:01..08:04 (the only bank: all banks out too), and the
	// crash from 08:01 (last seen alive) to 08:03 (the restart).
	want := []string{slo.BankOutage, slo.AllBanksOutage, slo.Crash}
	if len(kinds) != 3 || kinds[0] != want[0] || kinds[1] != want[1] || kinds[2] != want[2] {
		t.Fatalf("incidents = %v (%+v), want %v", kinds, rep.Incidents, want)
	}
	if c := rep.Incidents[2]; c.Seconds != 120 || rep.Incidents[0].Seconds != 180 {
		t.Errorf("crash %v s (want 120), outage %v s (want 180)", c.Seconds, rep.Incidents[0].Seconds)
	}
	if rep.Store.DownSeconds != 120 || rep.OfflineOnlySeconds != 180 {
		t.Errorf("store down = %v s (want 120), offline-only %v s (want 180)", rep.Store.DownSeconds, rep.OfflineOnlySeconds)
	}
}

// A payment decided after the last beat proves the process was alive
// then: the crash starts there, not at the beat.
func TestRecorderCrashStartsAtTheLastPaymentEvent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "storepay.db")
	db, err := migrations.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	var nanos atomic.Int64
	nanos.Store(start.UnixNano())
	now := func() time.Time { return time.Unix(0, nanos.Load()).UTC() }
	if err := (&slo.Recorder{DB: db, Now: now, AliveEvery: -1}).Open(ctx); err != nil {
		t.Fatal(err)
	}
	// A payment at 08:00:40, then the process dies; restart at 08:01:00.
	err = db.Update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`
			INSERT INTO orders (id,status,channel,currency,lines,total_amount,terminal_id,created_at,updated_at) VALUES ('o1','paid','pos','EUR','[]',1000,'t1','2026-12-01T08:00:39.000000000Z','2026-12-01T08:00:39.000000000Z');
			INSERT INTO payments (id,order_id,method,status,mode,amount,currency,capture,terminal_id,created_at,updated_at) VALUES ('p1','o1','card','captured','online',1000,'EUR',1,'t1','2026-12-01T08:00:39.000000000Z','2026-12-01T08:00:40.000000000Z');
			INSERT INTO payment_events (payment_id,from_status,to_status,at) VALUES ('p1','pending','captured','2026-12-01T08:00:40.000000000Z');`)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	nanos.Store(start.Add(time.Minute).UnixNano())
	if err := (&slo.Recorder{DB: db, Now: now, AliveEvery: -1}).Open(ctx); err != nil {
		t.Fatal(err)
	}
	rdb, err := slo.OpenReadOnly(path)
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	rep, err := slo.Compute(ctx, rdb, slo.Options{From: start, To: start.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Incidents) != 1 || rep.Incidents[0].Kind != slo.Crash || rep.Incidents[0].Seconds != 20 {
		t.Fatalf("incidents = %+v, want one crash of 20 s (08:00:40 .. 08:01:00)", rep.Incidents)
	}
}
