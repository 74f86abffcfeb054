package migrations

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Storage faults are told by SQLite's result code, wrapped or not; other
// SQLite errors (a constraint, a syntax error) and errors that only say
// "disk" or "full" in their text are not storage faults.
func TestStorageFaultsBySQLiteCode(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.db")
	if err := os.WriteFile(junk, []byte("this is not a database, it is a text file of some length............................................"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Check(ctx, junk)
	if err == nil {
		t.Fatal("Check accepted a text file")
	}
	db, err := Open(ctx, filepath.Join(dir, "storepay.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_, syntaxErr := db.Read().ExecContext(ctx, `SELEC nonsense`)
	if syntaxErr == nil || sqliteCode(syntaxErr) == 0 {
		t.Fatalf("a syntax error carries no SQLite code: %v", syntaxErr)
	}
	if IsStorageFault(syntaxErr) || IsStorageFault(fmt.Errorf("commit: %w", syntaxErr)) {
		t.Errorf("a syntax error counted as a storage fault: %v", syntaxErr)
	}
	if IsStorageFault(errors.New("database or disk is full")) {
		t.Error("an error's text alone counted as a storage fault")
	}
	// A read-only connection refusing a write: SQLITE_READONLY.
	_, roErr := db.Read().ExecContext(ctx, `CREATE TABLE t (x)`)
	if roErr == nil {
		t.Fatal("the read-only pool wrote")
	}
	if !IsStorageFault(fmt.Errorf("begin write: %w", roErr)) {
		t.Errorf("SQLITE_READONLY (%d, %v) not a storage fault", sqliteCode(roErr), roErr)
	}
}
