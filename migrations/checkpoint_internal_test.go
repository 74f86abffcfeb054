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
