package migrations_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"storepay/migrations"
)

// lockHelperEnv makes the test binary a process that holds a database's
// lock (TestLockHelperProcess), for the tests that need another process.
const lockHelperEnv = "STOREPAY_TEST_LOCK_HELPER"

func TestLockRefusesASecondHolderAndIsRetakenAfterRelease(t *testing.T) {
	db := filepath.Join(t.TempDir(), "sub", "storepay.db")
	release, err := migrations.Lock(db)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := readLockFile(t, db), strconv.Itoa(os.Getpid()); got != want {
		t.Fatalf("lock file holds %q, want this process's pid %s", got, want)
	}
	if fi, err := os.Stat(migrations.LockPath(db)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("lock file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}

	// A second Lock, even in the same process, is another open file:
	// refused, naming the holder and the lock file.
	_, err = migrations.Lock(db)
	var le *migrations.LockedError
	if !errors.As(err, &le) || !errors.Is(err, migrations.ErrLocked) {
		t.Fatalf("second Lock: %v, want a *LockedError", err)
	}
	if le.PID != os.Getpid() || le.Path != migrations.LockPath(db) {
		t.Fatalf("refusal names pid %d and %s; want %d and %s", le.PID, le.Path, os.Getpid(), migrations.LockPath(db))
	}
	for _, want := range []string{"pid " + strconv.Itoa(os.Getpid()), migrations.LockPath(db)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}

	if err := release(); err != nil {
		t.Fatal(err)
	}
	if got := readLockFile(t, db); got != "" {
		t.Errorf("a released lock file still names %q", got)
	}
	release, err = migrations.Lock(db)
	if err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	if err := release(); err != nil {
		t.Fatal(err)
	}
}

// Another process holds the lock: refused with its pid. Once it is
// killed (SIGKILL: it releases nothing itself), the lock file it left,
// naming a dead pid, is no obstacle.
func TestLockHeldByAnotherProcessAndLeftByACrash(t *testing.T) {
	db := filepath.Join(t.TempDir(), "storepay.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelperProcess$")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+db)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	wait := sync.OnceValue(cmd.Wait)
	t.Cleanup(func() {
		cmd.Process.Kill()
		wait()
	})
	// The helper says "locked" once it holds the lock (or dies; a timer
	// kills it if it says nothing within 20 s).
	stuck := time.AfterFunc(20*time.Second, func() { cmd.Process.Kill() })
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	stuck.Stop()
	if strings.TrimSpace(line) != "locked" {
		t.Fatalf("helper process said %q, want \"locked\"", line)
	}
	child := cmd.Process.Pid

	_, err = migrations.Lock(db)
	var le *migrations.LockedError
	if !errors.As(err, &le) || le.PID != child {
		t.Fatalf("Lock while pid %d holds it: %v", child, err)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("pid %d", child)) {
		t.Errorf("refusal %q does not name pid %d", err, child)
	}

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wait()
	if got := readLockFile(t, db); got != strconv.Itoa(child) {
		t.Fatalf("the crashed holder's lock file holds %q, want its pid %d (the stale file this test is about)", got, child)
	}
	release, err := migrations.Lock(db)
	if err != nil {
		t.Fatalf("Lock after the holder crashed: %v", err)
	}
	defer release()
	if got, want := readLockFile(t, db), strconv.Itoa(os.Getpid()); got != want {
		t.Fatalf("lock file holds %q after retaking, want %s", got, want)
	}
}

// TestLockHelperProcess is not a test: run by the test above as another
// process, it holds the lock of the database named in its environment
// until its stdin closes or it is killed.
func TestLockHelperProcess(t *testing.T) {
	db := os.Getenv(lockHelperEnv)
	if db == "" {
		t.Skip("helper process for TestLockHeldByAnotherProcessAndLeftByACrash")
	}
	release, err := migrations.Lock(db)
	if err != nil {
		fmt.Fprintln(os.Stderr, "helper:", err)
		os.Exit(3)
	}
	defer release()
	fmt.Println("locked")
	bufio.NewReader(os.Stdin).ReadString('\n')
}

func TestLockEmptyPath(t *testing.T) {
	if _, err := migrations.Lock(""); err == nil {
		t.Fatal("Lock(\"\") succeeded")
	}
}

func readLockFile(t *testing.T, db string) string {
	t.Helper()
	b, err := os.ReadFile(migrations.LockPath(db))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}
