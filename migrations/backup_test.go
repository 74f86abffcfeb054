package migrations_test

import (
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"storepay/migrations"
)

// A backup taken while a writer commits is one consistent snapshot: a
// table written in the same transaction as a counter always agrees with
// it in the copy; the copy is private (0600) and a second backup to the
// same name is refused, leaving the first intact.
func TestBackupWhileWriting(t *testing.T) {
	ctx := context.Background()
	db := MustOpen(t)
	if err := db.Update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`CREATE TABLE t (n INTEGER); CREATE TABLE c (total INTEGER); INSERT INTO c VALUES (0)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := db.Update(ctx, func(tx *sql.Tx) error {
				if _, err := tx.Exec(`INSERT INTO t VALUES (1)`); err != nil {
					return err
				}
				_, err := tx.Exec(`UPDATE c SET total = total + 1`)
				return err
			}); err != nil {
				t.Error(err)
				return
			}
			writes.Add(1)
		}
	}()
	waitWrites(t, &writes, 50)
	dst := filepath.Join(t.TempDir(), "backup.db")
	c, err := migrations.Backup(ctx, db.Path(), dst)
	before := writes.Load()
	waitWrites(t, &writes, before+20)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	list, _ := migrations.List()
	if c.Path != dst || c.SchemaVersion != list[len(list)-1].Version || c.Bytes == 0 {
		t.Fatalf("backup reported %+v", c)
	}
	cp, err := sql.Open("sqlite", "file:"+dst+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Close()
	var rows, total int64
	if err := cp.QueryRow(`SELECT (SELECT count(*) FROM t), (SELECT total FROM c)`).Scan(&rows, &total); err != nil {
		t.Fatal(err)
	}
	if rows != total || rows < 50 {
		t.Fatalf("copy holds %d rows beside a counter of %d: not one snapshot", rows, total)
	}
	var live int64
	db.Read().QueryRow(`SELECT count(*) FROM t`).Scan(&live)
	if live <= rows {
		t.Fatalf("the writer made no progress during and after the backup: live %d, copy %d", live, rows)
	}
	if st, _ := os.Stat(dst); st.Mode().Perm() != 0o600 {
		t.Fatalf("backup mode %v, want 0600", st.Mode().Perm())
	}
	before2, _ := os.ReadFile(dst)
	if _, err := migrations.Backup(ctx, db.Path(), dst); err == nil || !strings.Contains(err.Error(), "refusing to overwrite") {
		t.Fatalf("second backup to the same name: %v", err)
	}
	after, _ := os.ReadFile(dst)
	if string(before2) != string(after) {
		t.Fatal("the refused backup changed the first")
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(dst), ".*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// Bad input is refused with a clear error and creates nothing.
func TestBackupRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.db")
	if _, err := migrations.Backup(ctx, missing, filepath.Join(dir, "b1.db")); err == nil {
		t.Fatal("backup of a missing database succeeded")
	}
	if _, err := os.Stat(missing); err == nil {
		t.Fatal("backup created the database it was asked to copy")
	}
	notDB := filepath.Join(dir, "notes.txt")
	os.WriteFile(notDB, []byte("hello"), 0o600)
	if _, err := migrations.Backup(ctx, notDB, filepath.Join(dir, "b2.db")); err == nil || !strings.Contains(err.Error(), "not a storepay database") {
		t.Fatalf("backup of a text file: %v", err)
	}
	db := MustOpen(t)
	if _, err := migrations.Backup(ctx, db.Path(), filepath.Join(dir, "no-such-folder", "b.db")); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("backup into a missing folder: %v", err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("files left behind: %v", entries)
	}
}

// Restore puts a backup in place only where no database (nor its WAL)
// is, and the restored database opens with everything the backup held.
func TestRestore(t *testing.T) {
	ctx := context.Background()
	db := MustOpen(t)
	db.Update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (7)`)
		return err
	})
	bk := filepath.Join(t.TempDir(), "b.db")
	if _, err := migrations.Backup(ctx, db.Path(), bk); err != nil {
		t.Fatal(err)
	}
	if _, err := migrations.Restore(ctx, bk, db.Path()); err == nil || !strings.Contains(err.Error(), "move the database") {
		t.Fatalf("restore over a database: %v", err)
	}
	target := filepath.Join(t.TempDir(), "new", "storepay.db")
	os.MkdirAll(filepath.Dir(target), 0o700)
	os.WriteFile(target+"-wal", []byte("stale"), 0o600)
	if _, err := migrations.Restore(ctx, bk, target); err == nil || !strings.Contains(err.Error(), "-wal exists") {
		t.Fatalf("restore beside a stale WAL: %v", err)
	}
	os.Remove(target + "-wal")
	os.WriteFile(filepath.Join(t.TempDir(), "x"), nil, 0o600)
	broken := filepath.Join(t.TempDir(), "broken.db")
	b, _ := os.ReadFile(bk)
	os.WriteFile(broken, b[:len(b)/2], 0o600)
	if _, err := migrations.Restore(ctx, broken, target); err == nil {
		t.Fatal("a truncated backup was restored")
	}
	if _, err := os.Stat(target); err == nil {
		t.Fatal("a refused restore left a database")
	}
	if _, err := migrations.Restore(ctx, bk, target); err != nil {
		t.Fatal(err)
	}
	r, err := migrations.Open(ctx, target)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var n int
	if err := r.Read().QueryRow(`SELECT n FROM t`).Scan(&n); err != nil || n != 7 {
		t.Fatalf("restored database: %d %v", n, err)
	}
}

// waitWrites polls until the writer has made n writes (at most 20 s).
func waitWrites(t *testing.T, writes *atomic.Int64, n int64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for writes.Load() < n && !t.Failed() {
		if time.Now().After(deadline) {
			t.Fatalf("the writer made %d writes, waiting for %d", writes.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}
