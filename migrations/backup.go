package migrations

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
)

// Copy describes a database copy that Backup made or Restore checked.
type Copy struct {
	Path          string
	Bytes         int64
	SchemaVersion int // the highest migration applied
	Payments      int64
	SAFRecords    int64
}

// Backup copies the database at src to dst while it may be serving: a
// consistent snapshot (SQLite's VACUUM INTO, one read transaction) taken
// on a connection of its own that runs only reads and VACUUM INTO (which
// writes the new file only; query_only would refuse it), and without
// the storepay lock, so serve keeps selling: in WAL mode a reader
// neither waits for the writer nor holds it up.
//
// The copy is written to a temporary file beside dst, checked
// (PRAGMA integrity_check), fsynced, then linked to dst, which fails if
// dst exists: a backup never overwrites a file, even one created
// meanwhile; the directory is fsynced last, so a copy Backup reported
// survives a power cut. On any error nothing is left at dst. src must be
// an existing storepay database (it is never created).
func Backup(ctx context.Context, src, dst string) (Copy, error) {
	if err := checkSource(src); err != nil {
		return Copy{}, fmt.Errorf("backup: %w", err)
	}
	if _, err := os.Lstat(dst); err == nil {
		return Copy{}, fmt.Errorf("backup: %s already exists: refusing to overwrite it (choose a new name)", dst)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return Copy{}, fmt.Errorf("backup: %w", err)
	}
	dir := filepath.Dir(dst)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return Copy{}, fmt.Errorf("backup: folder %s does not exist", dir)
	}
	db, err := sql.Open(driverName, sourceDSN(src))
	if err != nil {
		return Copy{}, fmt.Errorf("backup: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := schemaVersion(ctx, db); err != nil {
		return Copy{}, fmt.Errorf("backup: %s: %w", src, err)
	}
	// VACUUM INTO wants a file that does not exist or is empty: an empty
	// temporary file, private from its first byte.
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return Copy{}, fmt.Errorf("backup: %w", err)
	}
	tmpPath := tmp.Name()
	tmp.Close()
	done := false
	defer func() {
		if !done {
			os.Remove(tmpPath)
		}
	}()
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, tmpPath); err != nil {
		return Copy{}, fmt.Errorf("backup: copy %s: %w", src, err)
	}
	c, err := Check(ctx, tmpPath)
	if err != nil {
		return Copy{}, fmt.Errorf("backup: the copy: %w", err)
	}
	if err := syncFile(tmpPath); err != nil {
		return Copy{}, fmt.Errorf("backup: %w", err)
	}
	if err := os.Link(tmpPath, dst); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return Copy{}, fmt.Errorf("backup: %s was created meanwhile: refusing to overwrite it", dst)
		}
		return Copy{}, fmt.Errorf("backup: %w", err)
	}
	done = true
	os.Remove(tmpPath)
	if err := syncDir(dir); err != nil {
		return Copy{}, fmt.Errorf("backup: %w", err)
	}
	c.Path = dst
	return c, nil
}

// Restore puts the backup at src in place as the database dst, for the
// restore drill (docs/operations.md). The caller holds dst's lock, so no
// storepay serves it. Restore refuses when dst or its WAL or shared-memory
// file exists: the damaged database is moved aside by a person, never
// overwritten, and a WAL left beside a restored file would be replayed
// into it. The backup is checked first (integrity, a storepay schema not
// newer than this binary's); the copy is fsynced before it is renamed into
// place and the folder fsynced after.
func Restore(ctx context.Context, src, dst string) (Copy, error) {
	for _, p := range []string{dst, dst + "-wal", dst + "-shm", dst + "-journal"} {
		if _, err := os.Lstat(p); err == nil {
			return Copy{}, fmt.Errorf("restore: %s exists: move the database and its -wal and -shm files aside first (restore never overwrites)", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return Copy{}, fmt.Errorf("restore: %w", err)
		}
	}
	c, err := Check(ctx, src)
	if err != nil {
		return Copy{}, fmt.Errorf("restore: backup %w", err)
	}
	list, err := List()
	if err != nil {
		return Copy{}, err
	}
	if latest := list[len(list)-1].Version; c.SchemaVersion > latest {
		return Copy{}, fmt.Errorf("restore: backup %s is at schema version %d, newer than this storepay's %d: restore it with the storepay that made it", src, c.SchemaVersion, latest)
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Copy{}, fmt.Errorf("restore: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".restore-*")
	if err != nil {
		return Copy{}, fmt.Errorf("restore: %w", err)
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	in, err := os.Open(src)
	if err != nil {
		return Copy{}, fmt.Errorf("restore: %w", err)
	}
	defer in.Close()
	if _, err := io.Copy(tmp, in); err != nil {
		return Copy{}, fmt.Errorf("restore: copy %s: %w", src, err)
	}
	if err := tmp.Sync(); err != nil {
		return Copy{}, fmt.Errorf("restore: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return Copy{}, fmt.Errorf("restore: %w", err)
	}
	if err := os.Link(tmp.Name(), dst); err != nil {
		return Copy{}, fmt.Errorf("restore: %w", err)
	}
	done = true
	os.Remove(tmp.Name())
	if err := syncDir(dir); err != nil {
		return Copy{}, fmt.Errorf("restore: %w", err)
	}
	c.Path = dst
	return c, nil
}

// Check opens the database file at path read-only and reports what it
// holds, failing unless SQLite finds it intact and it is a storepay
// database.
func Check(ctx context.Context, path string) (Copy, error) {
	st, err := os.Stat(path)
	if err != nil {
		return Copy{}, err
	}
	if !st.Mode().IsRegular() {
		return Copy{}, fmt.Errorf("%s is not a file", path)
	}
	q := url.Values{}
	q.Set("mode", "ro")
	db, err := sql.Open(driverName, "file:"+path+"?"+q.Encode())
	if err != nil {
		return Copy{}, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	var res string
	if err := db.QueryRowContext(ctx, `PRAGMA integrity_check(1)`).Scan(&res); err != nil {
		return Copy{}, fmt.Errorf("%s: %w", path, err)
	}
	if res != "ok" {
		return Copy{}, fmt.Errorf("%s is damaged: %s", path, res)
	}
	c := Copy{Path: path, Bytes: st.Size()}
	if c.SchemaVersion, err = schemaVersion(ctx, db); err != nil {
		return Copy{}, fmt.Errorf("%s: %w", path, err)
	}
	for _, n := range []struct {
		table string
		into  *int64
	}{{"payments", &c.Payments}, {"saf_records", &c.SAFRecords}} {
		// Tables a very old schema lacks count as empty.
		ok, err := tableExists(ctx, db, n.table)
		if err != nil {
			return Copy{}, fmt.Errorf("%s: %w", path, err)
		}
		if !ok {
			continue
		}
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM `+n.table).Scan(n.into); err != nil {
			return Copy{}, fmt.Errorf("%s: %w", path, err)
		}
	}
	return c, nil
}

// tableExists reports whether the database has a table of that name:
// asked of the schema, not guessed from an error's text.
func tableExists(ctx context.Context, db *sql.DB, name string) (bool, error) {
	var n int
	err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, name).Scan(&n)
	return n > 0, err
}

func schemaVersion(ctx context.Context, db *sql.DB) (int, error) {
	ok, err := tableExists(ctx, db, "schema_migrations")
	if sqliteCode(err) == sqliteNotADB || (err == nil && !ok) {
		return 0, errors.New("not a storepay database")
	}
	if err != nil {
		return 0, err
	}
	var v sql.NullInt64
	if err := db.QueryRowContext(ctx, `SELECT max(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, err
	}
	if !v.Valid {
		return 0, errors.New("not a storepay database (no migration applied)")
	}
	return int(v.Int64), nil
}

func checkSource(src string) error {
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("database: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("database %s is not a file", src)
	}
	return nil
}

// sourceDSN opens a serving database to copy it. mode=rw, not ro: a WAL
// reader maps the shared-memory file and may need to create it (a stopped
// store); rw never creates the database itself. Backup runs no statement
// that writes to it.
func sourceDSN(path string) string {
	q := url.Values{}
	q.Set("mode", "rw")
	q.Add("_pragma", "busy_timeout(10000)")
	return "file:" + path + "?" + q.Encode()
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
