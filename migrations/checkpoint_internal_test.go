package migrations

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
	"time"
)

// A reader that stays open keeps a RESTART checkpoint waiting, and while
// it waits no writer may start. The checkpointer gives up at once, so
// writes go on while the reader is open (before, each waited out the
// checkpointer's 10 s busy timeout and could then fail with SQLITE_BUSY).
func TestOpenReaderDoesNotStallWritesBehindTheCheckpointer(t *testing.T) {
	defer func(n int) { maxWALFrames = n }(maxWALFrames)
	maxWALFrames = 4 // any WAL this test writes calls for a RESTART
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "storepay.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// A read transaction holds its snapshot for the whole run.
	rtx, err := db.Read().BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	var n int
	if err := rtx.QueryRow(`SELECT count(*) FROM blobs`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	defer rtx.Rollback()
	blob := make([]byte, 4096)
	var slowest time.Duration
	// Writes for three checkpoint ticks: each tick sees a WAL past the
	// limit and tries a RESTART that the open reader blocks.
	for start := time.Now(); time.Since(start) < 3*checkpointEvery; {
		t0 := time.Now()
		if err := db.Update(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec(`INSERT INTO blobs (b) VALUES (?)`, blob)
			return err
		}); err != nil {
			t.Fatalf("write while a reader is open: %v", err)
		}
		slowest = max(slowest, time.Since(t0))
	}
	// The bound is far from both sides: a write takes milliseconds, one
	// behind the checkpointer waited seconds.
	if slowest > time.Second {
		t.Fatalf("a write waited %v behind the checkpointer", slowest)
	}
}

// After a burst the WAL does not stay as large as the burst made it: once
// the checkpointer has copied it into the database, the file is brought
// back under walSizeLimit.
func TestWALShrinksAfterABurst(t *testing.T) {
	defer func(n int64) { walSizeLimit = n }(walSizeLimit)
	walSizeLimit = 256 << 10
	ctx := context.Background()
	db, err := Open(ctx, filepath.Join(t.TempDir(), "storepay.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	// A burst: 4 MiB in one transaction, far past the limit.
	blob := make([]byte, 64<<10)
	if err := db.Update(ctx, func(tx *sql.Tx) error {
		for range 64 {
			if _, err := tx.Exec(`INSERT INTO blobs (b) VALUES (?)`, blob); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := db.walSize(); got < 4<<20 {
		t.Fatalf("the burst left a WAL of %d bytes: the test writes too little", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for db.walSize() > walSizeLimit {
		if time.Now().After(deadline) {
			t.Fatalf("WAL still %d bytes 10 s after the burst, limit %d", db.walSize(), walSizeLimit)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var n int
	if err := db.Read().QueryRow(`SELECT count(*) FROM blobs`).Scan(&n); err != nil || n != 64 {
		t.Fatalf("after the truncation: %d rows, %v", n, err)
	}
}
