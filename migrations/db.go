package migrations

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"modernc.org/sqlite"
)

//go:embed *.sql
var files embed.FS

// ErrClosed is returned by Update after Close.
var ErrClosed = errors.New("database closed")

// maxBatch bounds how many writes share one commit, so one commit never
// holds the writer for long.
const maxBatch = 256

// DB is storepay's database: one writer connection owned by a goroutine
// that group-commits, and a pool of read-only connections.
type DB struct {
	path     string
	write    *sql.DB
	read     *sql.DB
	ckpt     *sql.DB // the checkpointer's own connection
	ckptDone chan struct{}
	reqs     chan *writeReq // unbuffered: a send succeeds only when the writer takes it
	quit     chan struct{}
	done     chan struct{}
	once     sync.Once

	statsMu sync.Mutex
	stats   Stats

	// faultAt is when (unix nanoseconds) a write last failed because
	// the storage refused it; 0 if never.
	faultAt atomic.Int64

	opts Options
}

// Options are a database's test switches: the points where the
// simulator (cmd/storepay-sim) injects storage faults and crashes. storepay
// itself opens with the zero Options.
type Options struct {
	// BeforeCommit runs on the writer right before each commit. An error
	// fails the commit: the batch rolls back and every write in it gets
	// the error, as on a full disk (wrap ErrStorageFault for one) or a
	// crash at that instant.
	BeforeCommit func() error
	// AfterCommit runs on the writer right after each commit is on disk,
	// before any writer hears of it: a crash there loses no data but
	// every acknowledgement.
	AfterCommit func()
}

// ErrStorageFault marks an error as the storage refusing a write, for
// faults that do not come from SQLite itself (the simulator's full disk).
var ErrStorageFault = errors.New("storage refused the write")

// LastStorageFault reports when a write last failed because the storage
// refused it (disk full, I/O error, read-only file), or the zero time.
// A full disk is intermittent as SQLite sees it: once a checkpoint lets
// the WAL be reused, a small write fits again while a sale does not, so
// readiness looks at recent faults and not only at its own probe.
func (db *DB) LastStorageFault() time.Time {
	if n := db.faultAt.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// FreeBytes is the space left on the file system that holds the
// database, as an unprivileged writer sees it.
func (db *DB) FreeBytes() (uint64, error) { return freeBytes(filepath.Dir(db.path)) }

// IsStorageFault reports whether err says the storage refused a write,
// as opposed to a constraint, a busy lock or a bug.
func IsStorageFault(err error) bool {
	if errors.Is(err, ErrClosed) || errors.Is(err, ErrStorageFault) {
		return true
	}
	switch sqliteCode(err) {
	case sqliteReadOnly, sqliteIOErr, sqliteCorrupt, sqliteFull, sqliteCantOpen, sqliteNotADB:
		return true
	}
	return false
}

// sqliteCode is the primary SQLite result code err carries (extended
// codes such as SQLITE_IOERR_FSYNC reduced to theirs), or 0 if err is
// not SQLite's.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return 0
	}
	return se.Code() & 0xff
}

// SQLite's primary result codes for a storage that refuses writes
// (https://sqlite.org/rescode.html).
const (
	sqliteReadOnly = 8
	sqliteIOErr    = 10
	sqliteCorrupt  = 11
	sqliteFull     = 13
	sqliteCantOpen = 14
	sqliteNotADB   = 26
)

// noteFault remembers a storage fault for readiness.
func (db *DB) noteFault(err error) {
	if IsStorageFault(err) {
		db.faultAt.Store(time.Now().UnixNano())
	}
}

// Stats are the writer's counters since Open.
type Stats struct {
	Batches    int64         // transactions committed (or failed)
	Writes     int64         // Update calls run
	ExecTime   time.Duration // time running the writes' functions
	CommitTime time.Duration // time in COMMIT (the fsync)
}

// WriterStats returns a snapshot of the writer's counters.
func (db *DB) WriterStats() Stats {
	db.statsMu.Lock()
	defer db.statsMu.Unlock()
	return db.stats
}

type writeReq struct {
	fn   func(*sql.Tx) error
	done chan error
}

// Open opens (creating if needed) the database at path, applies every
// migration not applied yet and starts the writer. The parent directory
// is created with mode 0700: the database holds payment data.
func Open(ctx context.Context, path string) (*DB, error) { return OpenWith(ctx, path, Options{}) }

// OpenWith is Open with test switches.
func OpenWith(ctx context.Context, path string, opts Options) (*DB, error) {
	if path == "" {
		return nil, errors.New("open database: empty path")
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("open database: %w", err)
		}
	}
	// A new database file is private from its first byte: SQLite gives
	// its WAL and shared-memory files the database file's permissions.
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
		f.Close()
	} else if !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("open database: %w", err)
	}
	write, err := sql.Open(driverName, dsn(path, roleWriter))
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	write.SetConnMaxIdleTime(0)
	if err := Apply(ctx, write); err != nil {
		write.Close()
		return nil, err
	}
	read, err := sql.Open(driverName, dsn(path, roleReader))
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("open database: %w", err)
	}
	read.SetMaxOpenConns(8)
	read.SetMaxIdleConns(8)
	ckpt, err := sql.Open(driverName, dsn(path, roleCheckpointer))
	if err != nil {
		write.Close()
		read.Close()
		return nil, fmt.Errorf("open database: %w", err)
	}
	ckpt.SetMaxOpenConns(1)
	db := &DB{
		path:     path,
		write:    write,
		read:     read,
		ckpt:     ckpt,
		reqs:     make(chan *writeReq),
		quit:     make(chan struct{}),
		done:     make(chan struct{}),
		ckptDone: make(chan struct{}),
		opts:     opts,
	}
	go db.loop()
	go db.checkpoint()
	return db, nil
}

// checkpointEvery is how often the WAL is copied back into the database.
const checkpointEvery = 500 * time.Millisecond

// hardEvery spaces the checkpointer's long waits for readers.
const hardEvery = 15 * time.Second

// ckptBusy is how long the checkpointer's RESTART waits for readers while
// it keeps writers out, as a rule.
const ckptBusy = 50 * time.Millisecond

// Past maxWALFrames (64 MiB) the checkpointer asks readers to let the WAL
// be reused, briefly; past hardWALFrames (256 MiB) it waits for them.
// Variables for tests.
var (
	maxWALFrames  = 16384
	hardWALFrames = 4 * 16384
)

// walSizeLimit is the size the WAL file is brought back to once a burst
// is over. A checkpoint copies the WAL into the database but leaves the
// file as large as the burst made it (a 5,000-payment burst: 185 MB,
// still 76 MB after 20 s idle): SQLite reuses it from the start rather
// than shrink it. journal_size_limit truncates it to this size whenever
// the log is reset, and once the checkpointer has copied all of it and
// it is still larger, a TRUNCATE checkpoint empties it. A variable for
// tests.
var walSizeLimit int64 = 16 << 20

// checkpoint copies the WAL into the database file in the background
// (PASSIVE: it never blocks the writer or the readers), so the WAL stays
// small without the writer ever paying for it.
func (db *DB) checkpoint() {
	defer close(db.ckptDone)
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	var lastHard time.Time
	for {
		select {
		case <-db.quit:
			return
		case <-t.C:
		}
		var busy, logFrames, done int
		if err := db.ckpt.QueryRow(`PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &logFrames, &done); err != nil {
			// A busy or failed checkpoint is retried at the next tick;
			// the data is safe in the WAL meanwhile.
			continue
		}
		switch {
		case done == logFrames && logFrames >= 0 && db.walSize() > walSizeLimit:
			// Everything is in the database and the file is still big:
			// empty it. TRUNCATE waits for readers only briefly (see dsn)
			// and is tried again at the next tick if one holds on.
			db.ckpt.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
		case logFrames > hardWALFrames && time.Since(lastHard) >= hardEvery:
			// Readers have kept the WAL from being reused for long: wait
			// for them up to two seconds, writers held back meanwhile,
			// rather than let it grow without bound; at most every
			// hardEvery, so that writers get their turns in between.
			db.restartWaiting(2 * time.Second)
			lastHard = time.Now()
		case logFrames > maxWALFrames:
			// Readers kept the WAL from being reused: ask them to let go,
			// waiting only briefly (see dsn), and again at the next tick.
			db.ckpt.Exec(`PRAGMA wal_checkpoint(RESTART)`)
		}
	}
}

// walSize is the WAL file's size on disk (0 if there is none).
func (db *DB) walSize() int64 {
	fi, err := os.Stat(db.path + "-wal")
	if err != nil {
		return 0
	}
	return fi.Size()
}

// restartWaiting runs a RESTART checkpoint that waits up to d for the
// readers, on the checkpointer's one connection, then goes back to its
// short wait.
func (db *DB) restartWaiting(d time.Duration) {
	ctx := context.Background()
	conn, err := db.ckpt.Conn(ctx)
	if err != nil {
		return
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, fmt.Sprintf(`PRAGMA busy_timeout = %d`, d.Milliseconds())); err != nil {
		return
	}
	conn.ExecContext(ctx, `PRAGMA wal_checkpoint(RESTART)`)
	conn.ExecContext(ctx, fmt.Sprintf(`PRAGMA busy_timeout = %d`, ckptBusy.Milliseconds()))
}

// dsn builds the modernc.org/sqlite connection string. Pragmas go through
// _pragma=name(value); WAL with synchronous=FULL is what survives a power
// cut. The writer takes its lock at BEGIN (_txlock=immediate) so that a
// transaction never fails half way on a lock upgrade.
func dsn(path string, role connRole) string {
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	if role == roleCheckpointer {
		// A RESTART checkpoint keeps new writers out while it waits for
		// readers: it may wait only briefly, or every terminal's write
		// would wait on it. It tries again at the next tick.
		q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", ckptBusy.Milliseconds()))
	} else {
		q.Add("_pragma", "busy_timeout(10000)")
	}
	q.Add("_pragma", "foreign_keys(1)")
	if role != roleReader {
		q.Set("_txlock", "immediate")
		// The writer never checkpoints: a checkpoint copies the WAL into
		// the database file and fsyncs it, and inside a commit it would
		// stall every terminal waiting on that commit. The checkpointer
		// does it on its own connection (see checkpoint).
		q.Add("_pragma", "wal_autocheckpoint(0)")
		// Each write of a group commit runs in a savepoint; its undo
		// pages (the sub-journal) stay in memory instead of a temp file.
		q.Add("_pragma", "temp_store(2)")
		// The WAL shrinks back to walSizeLimit when the log is reset
		// (see walSizeLimit).
		q.Add("_pragma", fmt.Sprintf("journal_size_limit(%d)", walSizeLimit))
	} else {
		q.Add("_pragma", "query_only(1)")
	}
	return "file:" + path + "?" + q.Encode()
}

// connRole is what a connection pool is for.
type connRole int

const (
	roleWriter connRole = iota
	roleReader
	roleCheckpointer
)

// Path is the database file's path.
func (db *DB) Path() string { return db.path }

// Read is the read-only connection pool. Reads see every write whose
// Update has returned.
func (db *DB) Read() *sql.DB { return db.read }

// Queryer is what both a write transaction and the read pool offer: code
// that reads inside a write and from the pool alike takes one.
type Queryer interface {
	QueryRow(query string, args ...any) *sql.Row
	Query(query string, args ...any) (*sql.Rows, error)
}

// ReadAt is the read pool as a Queryer whose queries carry ctx.
func (db *DB) ReadAt(ctx context.Context) Queryer { return readAt{ctx, db.read} }

type readAt struct {
	ctx context.Context
	db  *sql.DB
}

func (r readAt) QueryRow(q string, args ...any) *sql.Row {
	return r.db.QueryRowContext(r.ctx, q, args...)
}
func (r readAt) Query(q string, args ...any) (*sql.Rows, error) {
	return r.db.QueryContext(r.ctx, q, args...)
}

// View runs fn in a read-only transaction: one consistent snapshot.
func (db *DB) View(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := db.read.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("begin read: %w", err)
	}
	defer tx.Rollback()
	return fn(tx)
}

// Update runs fn inside a write transaction and returns once that
// transaction is durably committed (or failed). fn may share its commit
// with other callers' writes, but runs in its own savepoint: if fn returns
// an error, only fn's changes are rolled back and that error is returned.
//
// fn runs on the writer goroutine: it must be quick and must not call the
// network or Update. It may run only once. ctx is checked before fn is
// queued; once queued, Update waits for the commit so that the caller
// always knows whether its write is on disk.
func (db *DB) Update(ctx context.Context, fn func(*sql.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	req := &writeReq{fn: fn, done: make(chan error, 1)}
	select {
	case db.reqs <- req:
	case <-db.quit:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	err := <-req.done
	if err != nil {
		db.noteFault(err)
	}
	return err
}

// Close stops the writer after the commit in progress and closes both
// pools. Update calls after Close return ErrClosed.
func (db *DB) Close() error {
	var err error
	db.once.Do(func() {
		close(db.quit)
		<-db.done
		<-db.ckptDone
		// A last full checkpoint leaves a small WAL behind.
		db.ckpt.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
		err = errors.Join(db.write.Close(), db.read.Close(), db.ckpt.Close())
	})
	return err
}

func (db *DB) loop() {
	defer close(db.done)
	batch := make([]*writeReq, 0, maxBatch)
	for {
		select {
		case r := <-db.reqs:
			batch = append(batch[:0], r)
		case <-db.quit:
			return
		}
	drain:
		for len(batch) < maxBatch {
			select {
			case r := <-db.reqs:
				batch = append(batch, r)
			default:
				break drain
			}
		}
		db.commit(batch)
	}
}

// commit runs a batch in one transaction, each write in its own savepoint.
func (db *DB) commit(batch []*writeReq) {
	errs := make([]error, len(batch))
	failAll := func(err error) {
		for _, r := range batch {
			r.done <- err
		}
	}
	tx, err := db.write.Begin()
	if err != nil {
		failAll(fmt.Errorf("begin write: %w", err))
		return
	}
	single := len(batch) == 1
	t0 := time.Now()
	defer func() {
		db.statsMu.Lock()
		db.stats.Batches++
		db.stats.Writes += int64(len(batch))
		db.statsMu.Unlock()
	}()
	for i, r := range batch {
		if single {
			errs[i] = call(r.fn, tx)
			continue
		}
		if _, err := tx.Exec("SAVEPOINT w"); err != nil {
			tx.Rollback()
			failAll(fmt.Errorf("savepoint: %w", err))
			return
		}
		errs[i] = call(r.fn, tx)
		if errs[i] != nil {
			// A failed statement may have aborted the whole transaction
			// (disk full, I/O error): then nothing in the batch commits.
			if _, err := tx.Exec("ROLLBACK TO w"); err != nil {
				tx.Rollback()
				failAll(fmt.Errorf("write aborted: %w (after %w)", err, errs[i]))
				return
			}
		}
		if _, err := tx.Exec("RELEASE w"); err != nil {
			tx.Rollback()
			failAll(fmt.Errorf("release savepoint: %w", err))
			return
		}
	}
	if single && errs[0] != nil {
		tx.Rollback()
		batch[0].done <- errs[0]
		return
	}
	t1 := time.Now()
	if db.opts.BeforeCommit != nil {
		if err := db.opts.BeforeCommit(); err != nil {
			tx.Rollback()
			failAll(fmt.Errorf("commit: %w", err))
			return
		}
	}
	err = tx.Commit()
	db.statsMu.Lock()
	db.stats.ExecTime += t1.Sub(t0)
	db.stats.CommitTime += time.Since(t1)
	db.statsMu.Unlock()
	if err != nil {
		failAll(fmt.Errorf("commit: %w", err))
		return
	}
	if db.opts.AfterCommit != nil {
		db.opts.AfterCommit()
	}
	for i, r := range batch {
		r.done <- errs[i]
	}
}

// call runs fn, turning a panic into an error so one bad write cannot kill
// the writer that every terminal depends on.
func call(fn func(*sql.Tx) error, tx *sql.Tx) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("write panicked: %v", p)
		}
	}()
	return fn(tx)
}

// Apply brings the schema of db up to date, one transaction per migration
// file, so that a failed migration leaves the previous version intact.
func Apply(ctx context.Context, db *sql.DB) error { return ApplyTo(ctx, db, math.MaxInt) }

// ApplyTo applies the migrations up to and including version: the schema
// an older storepay left, for the tests that upgrade from every past
// version.
func ApplyTo(ctx context.Context, db *sql.DB, version int) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	list, err := List()
	if err != nil {
		return err
	}
	for _, m := range list {
		if m.Version > version {
			break
		}
		if err := applyOne(ctx, db, m); err != nil {
			return err
		}
	}
	return nil
}

func applyOne(ctx context.Context, db *sql.DB, m Migration) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", m.Name, err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE version = ?`, m.Version).Scan(&n); err != nil {
		return fmt.Errorf("migrate %s: %w", m.Name, err)
	}
	if n > 0 {
		return nil
	}
	if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
		return fmt.Errorf("migrate %s: %w", m.Name, err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
		m.Version, m.Name, FormatTime(time.Now())); err != nil {
		return fmt.Errorf("migrate %s: %w", m.Name, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("migrate %s: %w", m.Name, err)
	}
	return nil
}

// Migration is one embedded schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// List returns the embedded migrations in version order. File names start
// with their version number: 0001_init.sql.
func List() ([]Migration, error) {
	entries, err := fs.Glob(files, "*.sql")
	if err != nil {
		return nil, err
	}
	var out []Migration
	seen := map[int]string{}
	for _, name := range entries {
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must start with a version number", name)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", prev, name, v)
		}
		seen[v] = name
		b, err := files.ReadFile(name)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(b)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// timeLayout has a fixed width so that stored times sort as text.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// FormatTime is how every time is stored: UTC, fixed width, sortable.
func FormatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// ParseTime reads a time written by FormatTime (or any RFC 3339 time).
func ParseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, s)
}
