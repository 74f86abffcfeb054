package migrations

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// ErrLocked is the sentinel of a [LockedError]: another process holds the
// database's lock.
var ErrLocked = errors.New("database is locked by another process")

// LockedError is the refusal of [Lock]: another storepay holds the
// database. It names the holder's pid, as that process wrote it into the
// lock file, so that an operator can find it; PID is 0 when the holder
// had not written it yet (it was starting) or the file was unreadable.
type LockedError struct {
	Database string // the database path Lock was given
	Path     string // the lock file
	PID      int
}

func (e *LockedError) Error() string {
	holder := "another process (its pid is not written yet)"
	if e.PID > 0 {
		holder = "another storepay, pid " + strconv.Itoa(e.PID)
	}
	return fmt.Sprintf("database %s is in use by %s: it holds the lock %s; stop it first (one storepay per database)",
		e.Database, holder, e.Path)
}

// Is makes errors.Is(err, ErrLocked) true for a *LockedError.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// LockPath is the lock file of the database at dbPath: beside it, so that
// one database has one lock whatever the working directory.
func LockPath(dbPath string) string { return dbPath + ".lock" }

// Lock takes the exclusive lock of the database at dbPath, so that one
// storepay process at a time serves or writes it: the in-memory guards
// of a running storepay (the Idempotency-Keys still running, the payments
// whose bank call runs in this process, the forwarder's dispatched
// records) only hold if nobody else writes the same payments. It is an flock(2) on [LockPath]: the kernel drops it when the
// process exits, crash and SIGKILL included, so a lock file left behind
// by a dead process is no obstacle; the file is never removed (removing
// it would let a third process lock a new file while a second waits on
// the old one).
//
// Lock does not wait: while another process holds the lock it returns a
// *[LockedError] (errors.Is ErrLocked) naming the holder's pid. On
// success the lock file holds this process's pid, and release gives the
// lock back (exiting does too). Lock is separate from [Open] on purpose:
// a process may open one database several times (tests, a simulator
// reopening it after a simulated crash), and a lock is per process.
//
// Platforms without flock(2) get an error wrapping errors.ErrUnsupported:
// storepay refuses to run unguarded rather than risk two writers.
func Lock(dbPath string) (release func() error, err error) {
	if dbPath == "" {
		return nil, errors.New("lock database: empty path")
	}
	path := LockPath(dbPath)
	// The database's folder may not exist yet: Open makes it, with the
	// same mode, after the lock is taken.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("lock database: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock database: %w", err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock database %s: %w", path, err)
	}
	if !held {
		pid := readPID(f)
		f.Close()
		return nil, &LockedError{Database: dbPath, Path: path, PID: pid}
	}
	// The pid tells an operator who holds the lock; the lock itself is
	// the flock. A pid that cannot be written (a full disk) leaves the
	// lock held and the refusal of a second process without a pid, which
	// is better than refusing to start on a full disk.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() error {
		// Emptied first, so that the file of a released lock names no
		// process; closing the file releases the flock.
		f.Truncate(0)
		if err := f.Close(); err != nil {
			return fmt.Errorf("release lock %s: %w", path, err)
		}
		return nil
	}, nil
}

// readPID reads the holder's pid from the lock file, 0 if there is none.
func readPID(f *os.File) int {
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 64))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
