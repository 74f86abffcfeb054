package migrations_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"storepay/migrations"
)

func MustOpen(tb testing.TB) *migrations.DB {
	tb.Helper()
	db, err := migrations.Open(context.Background(), filepath.Join(tb.TempDir(), "storepay.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

func TestOpenAppliesMigrationsOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "storepay.db")
	for i := 0; i < 2; i++ {
		db, err := migrations.Open(context.Background(), path)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		var n int
		if err := db.Read().QueryRow(`SELECT count(*) FROM schema_migrations`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		list, _ := migrations.List()
		if n != len(list) {
			t.Fatalf("open %d: %d migrations recorded, want %d", i, n, len(list))
		}
		var mode, sync string
		db.Read().QueryRow(`PRAGMA journal_mode`).Scan(&mode)
		db.Read().QueryRow(`PRAGMA synchronous`).Scan(&sync)
		if mode != "wal" || sync != "2" {
			t.Fatalf("journal_mode=%s synchronous=%s, want wal and 2 (FULL)", mode, sync)
		}
		db.Close()
	}
}

func TestReadPoolIsReadOnly(t *testing.T) {
	db := MustOpen(t)
	if _, err := db.Read().Exec(`INSERT INTO heartbeat (id, at) VALUES (1, 'x')`); err == nil {
		t.Fatal("write through the read pool succeeded")
	}
}

// A failing write in a shared commit rolls back only itself.
func TestUpdateIsolatesFailuresInABatch(t *testing.T) {
	db := MustOpen(t)
	ctx := context.Background()
	boom := errors.New("boom")
	var wg sync.WaitGroup
	errs := make([]error, 200)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = db.Update(ctx, func(tx *sql.Tx) error {
				if _, err := tx.Exec(`INSERT INTO devices (id, name, role, token_hash, created_at) VALUES (?, ?, 'terminal', ?, 'now')`,
					fmt.Sprint("d", i), fmt.Sprint("n", i), fmt.Sprint("h", i)); err != nil {
					return err
				}
				if i%3 == 0 {
					return boom
				}
				if i%7 == 0 {
					panic("bad write")
				}
				return nil
			})
		}()
	}
	wg.Wait()
	want := 0
	for i, err := range errs {
		switch {
		case i%3 == 0:
			if !errors.Is(err, boom) {
				t.Fatalf("write %d: err = %v, want boom", i, err)
			}
		case i%7 == 0:
			if err == nil {
				t.Fatalf("write %d: panic not reported", i)
			}
		default:
			if err != nil {
				t.Fatalf("write %d: %v", i, err)
			}
			want++
		}
	}
	var got int
	db.Read().QueryRow(`SELECT count(*) FROM devices`).Scan(&got)
	if got != want {
		t.Fatalf("%d rows committed, want %d", got, want)
	}
}

func TestUpdateIsDurableAcrossReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "storepay.db")
	db, err := migrations.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(context.Background(), func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO heartbeat (id, at) VALUES (1, 'then')`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := db.Update(context.Background(), func(*sql.Tx) error { return nil }); !errors.Is(err, migrations.ErrClosed) {
		t.Fatalf("update after close: %v, want ErrClosed", err)
	}
	db2, err := migrations.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	var at string
	if err := db2.Read().QueryRow(`SELECT at FROM heartbeat`).Scan(&at); err != nil || at != "then" {
		t.Fatalf("after reopen: at=%q err=%v", at, err)
	}
}

func BenchmarkUpdateParallel(b *testing.B) {
	db := MustOpen(b)
	b.SetParallelism(32)
	var mu sync.Mutex
	n := 0
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			mu.Lock()
			n++
			i := n
			mu.Unlock()
			if err := db.Update(context.Background(), func(tx *sql.Tx) error {
				_, err := tx.Exec(`INSERT INTO devices (id, name, role, token_hash, created_at) VALUES (?, ?, 'terminal', ?, 'now')`,
					fmt.Sprint("d", i), fmt.Sprint("n", i), fmt.Sprint("h", i))
				return err
			}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A write the storage refuses is remembered for readiness; a write refused
// for its own reasons (a constraint) is not a storage fault.
func TestStorageFaultIsRemembered(t *testing.T) {
	db := MustOpen(t)
	ctx := context.Background()
	put := func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO heartbeat (id, at) VALUES (1, 'x')`)
		return err
	}
	if err := db.Update(ctx, put); err != nil {
		t.Fatal(err)
	}
	err := db.Update(ctx, put) // the same primary key again
	if err == nil || migrations.IsStorageFault(err) {
		t.Fatalf("duplicate key: err %v, storage fault %v", err, migrations.IsStorageFault(err))
	}
	if at := db.LastStorageFault(); !at.IsZero() {
		t.Fatalf("a constraint violation was taken for a storage fault at %v", at)
	}
	// query_only makes SQLite refuse the write with SQLITE_READONLY, the
	// code a read-only file gives.
	err = db.Update(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`PRAGMA query_only = 1`); err != nil {
			return err
		}
		defer tx.Exec(`PRAGMA query_only = 0`)
		_, err := tx.Exec(`UPDATE heartbeat SET at = 'y'`)
		return fmt.Errorf("update heartbeat: %w", err)
	})
	if !migrations.IsStorageFault(err) {
		t.Fatalf("read-only write: %v, not a storage fault", err)
	}
	if db.LastStorageFault().IsZero() {
		t.Fatal("the refused write was not remembered")
	}
	if !migrations.IsStorageFault(fmt.Errorf("x: %w", migrations.ErrClosed)) {
		t.Fatal("a closed database is a storage fault")
	}
}

// The database holds payment data: a new file and its WAL are readable
// by storepay's user only, whatever the umask.
func TestNewDatabaseIsPrivate(t *testing.T) {
	db := MustOpen(t)
	if err := db.Update(context.Background(), func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO heartbeat (id, at) VALUES (1, 'x')`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"", "-wal"} {
		fi, err := os.Stat(db.Path() + suffix)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != 0o600 {
			t.Errorf("storepay.db%s has mode %v, want -rw-------", suffix, perm)
		}
	}
	if free, err := db.FreeBytes(); err != nil || free == 0 {
		t.Fatalf("free space on a temp dir: %d, %v", free, err)
	}
}

// The commit hooks see every commit: BeforeCommit's error fails the
// whole batch and nothing of it reaches the file; AfterCommit runs once
// the commit is on disk.
func TestCommitHooks(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "s.db")
	var fail atomic.Bool
	var after atomic.Int64
	db, err := migrations.OpenWith(ctx, path, migrations.Options{
		BeforeCommit: func() error {
			if fail.Load() {
				return fmt.Errorf("simulated full disk: %w", migrations.ErrStorageFault)
			}
			return nil
		},
		AfterCommit: func() { after.Add(1) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	write := func(at string) error {
		return db.Update(ctx, func(tx *sql.Tx) error {
			_, err := tx.Exec(`INSERT INTO heartbeat (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at`, at)
			return err
		})
	}
	if err := write("first"); err != nil {
		t.Fatal(err)
	}
	fail.Store(true)
	err = write("second")
	if !migrations.IsStorageFault(err) {
		t.Fatalf("a write failed by BeforeCommit: %v, want a storage fault", err)
	}
	var at string
	if err := db.Read().QueryRow(`SELECT at FROM heartbeat`).Scan(&at); err != nil || at != "first" {
		t.Fatalf("heartbeat %q (%v) after the failed commit, want first", at, err)
	}
	if n := after.Load(); n != 1 {
		t.Fatalf("AfterCommit ran %d times, want 1", n)
	}
}
