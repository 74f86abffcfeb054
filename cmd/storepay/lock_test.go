package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite" // the snapshot's read-only connection

	"storepay/migrations"
)

// runMainEnv makes this test binary run storepay's main instead of the
// tests: the end-to-end tests below start it as a process of its own, so
// that main's flags, exit codes, signals and the kernel's flock between
// processes are the real ones, without building a second binary.
const runMainEnv = "STOREPAY_TEST_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main() // exits
	}
	os.Exit(m.Run())
}

// child is a storepay process started from this test binary.
type child struct {
	cmd    *exec.Cmd
	stderr *lockedBuffer
	wait   func() error
}

func startChild(t *testing.T, env []string, args ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), runMainEnv+"=1"), env...)
	c := &child{cmd: cmd, stderr: &lockedBuffer{}}
	cmd.Stderr = c.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.wait = sync.OnceValue(cmd.Wait)
	t.Cleanup(func() {
		cmd.Process.Kill()
		c.wait()
		if t.Failed() {
			t.Logf("stderr of storepay %s (pid %d):\n%s", strings.Join(args, " "), cmd.Process.Pid, c.stderr)
		}
	})
	return c
}

// exitCode waits (at most 30 s) for the process to exit on its own.
func (c *child) exitCode(t *testing.T) int {
	t.Helper()
	stuck := time.AfterFunc(30*time.Second, func() { c.cmd.Process.Kill() })
	defer stuck.Stop()
	err := c.wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("wait: %v", err)
	}
	return c.cmd.ProcessState.ExitCode()
}

// serving waits until serve logs the address it serves on.
func (c *child) serving(t *testing.T) string {
	t.Helper()
	var addr string
	waitFor(t, "storepay serve to start", 20*time.Second, func() bool {
		if c.cmd.ProcessState != nil || !c.running() {
			t.Fatalf("storepay serve exited: %s", c.stderr)
		}
		sc := bufio.NewScanner(strings.NewReader(c.stderr.String()))
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "storepay serving" {
				addr = line.Addr
				return true
			}
		}
		return false
	})
	return "http://" + addr
}

// running reports whether the process has not exited, without reaping it.
func (c *child) running() bool { return c.cmd.Process.Signal(syscall.Signal(0)) == nil }

// One process per database, end to end: while a storepay serves a
// database, a second serve of it exits 1 naming the first one's pid and
// the lock file, and so does migrate, changing nothing; the first still
// answers. reconcile and devices enroll run beside it. A lock left by a
// crash (SIGKILL) stops nobody.
func TestSecondServeOfADatabaseIsRefused(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	dir := t.TempDir()
	db := filepath.Join(dir, "data", "storepay.db")
	cfgPath := filepath.Join(dir, "storepay.json")
	cfg := fmt.Sprintf(`{"store_id": "store-042", "listen": "127.0.0.1:0", "database": %q,
		"gateways": [{"name": "bank-a", "protocol": "acquirer-json", "urls": [%q], "merchant_id": "store-042",
		"api_key_env": "BANK_A_KEY", "probe_interval": "-1s"}]}`, db, b.urls[0])
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{"STOREPAY_CARD_KEY=" + testCardKey, "BANK_A_KEY=" + b.key}

	enroll := exec.Command(os.Args[0], "devices", "enroll", "--config", cfgPath, "--name", "lane-3", "--role", "terminal")
	enroll.Env = append(os.Environ(), runMainEnv+"=1")
	out, err := enroll.Output()
	if err != nil {
		t.Fatalf("devices enroll: %v", err)
	}
	token := strings.TrimSpace(string(out))

	first := startChild(t, env, "serve", "--config", cfgPath)
	url := first.serving(t)
	order := apiCall(t, "POST", url+"/v1/orders", token, `{"channel":"walk_in","currency":"USD",
		"lines":[{"sku":"LATTE-L","description":"Latte large","quantity":2,"unit_amount":450}]}`)
	if order.status != http.StatusCreated {
		t.Fatalf("create order: %s", order)
	}
	orderURL := url + "/v1/orders/" + order.str("id")
	before := snapshot(t, db)
	holder := strconv.Itoa(first.cmd.Process.Pid)

	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"serve", "--config", cfgPath}, 1},
		{[]string{"migrate", "--config", cfgPath}, 1},
	} {
		second := startChild(t, env, tc.args...)
		if code := second.exitCode(t); code != tc.code {
			t.Errorf("storepay %s while pid %s serves: exit %d, want %d\n%s", tc.args[0], holder, code, tc.code, second.stderr)
			continue
		}
		msg := second.stderr.String()
		for _, want := range []string{"pid " + holder, migrations.LockPath(db)} {
			if !strings.Contains(msg, want) {
				t.Errorf("storepay %s's refusal does not say %q:\n%s", tc.args[0], want, msg)
			}
		}
	}

	if after := snapshot(t, db); after != before {
		t.Errorf("the refused commands changed the database:\nbefore %s\nafter  %s", before, after)
	}
	if got := apiCall(t, "GET", orderURL, token, ""); got.status != http.StatusOK {
		t.Fatalf("the first storepay no longer answers: %s", got)
	}

	// reconcile and devices enroll run beside it: the nightly cron does
	// not stop a store that sells.
	beside := startChild(t, env, "devices", "enroll", "--config", cfgPath, "--name", "lane-4", "--role", "terminal")
	if code := beside.exitCode(t); code != 0 {
		t.Errorf("devices enroll beside a serving storepay: exit %d\n%s", code, beside.stderr)
	}
	beside = startChild(t, env, "reconcile", "--config", cfgPath, "--date", "2026-11-21",
		"--json", filepath.Join(dir, "r.json"), "--csv", filepath.Join(dir, "r.csv"), "--settlement", "bank-a="+emptyReport(t, dir))
	if code := beside.exitCode(t); code != 0 {
		t.Errorf("reconcile beside a serving storepay: exit %d\n%s", code, beside.stderr)
	}
	if got := apiCall(t, "GET", orderURL, token, ""); got.status != http.StatusOK {
		t.Fatalf("the first storepay no longer answers after them: %s", got)
	}

	// A crash leaves the lock file naming a dead process: no obstacle.
	first.cmd.Process.Signal(syscall.SIGKILL)
	first.wait()
	if b, _ := os.ReadFile(migrations.LockPath(db)); strings.TrimSpace(string(b)) != holder {
		t.Fatalf("lock file after the crash holds %q, want the dead pid %s", b, holder)
	}
	third := startChild(t, env, "serve", "--config", cfgPath)
	if got := apiCall(t, "GET", third.serving(t)+"/v1/orders/"+order.str("id"), token, ""); got.status != http.StatusOK {
		t.Fatalf("a storepay started after the crash: %s", got)
	}
	third.cmd.Process.Signal(syscall.SIGTERM)
	if code := third.exitCode(t); code != 0 {
		t.Fatalf("serve after SIGTERM: exit %d", code)
	}
}

func apiCall(t *testing.T, method, url, token, body string) resp {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if method == "POST" {
		req.Header.Set("Idempotency-Key", fmt.Sprintf("lock-test-%d", time.Now().UnixNano()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	r := resp{status: res.StatusCode, header: res.Header}
	if err := json.NewDecoder(res.Body).Decode(&r.body); err != nil {
		t.Fatalf("%s %s: %d, body not JSON: %v", method, url, res.StatusCode, err)
	}
	r.raw, _ = json.Marshal(r.body)
	return r
}

// snapshot is every table's rows, read through a read-only connection,
// as one digest per table: equal snapshots mean the same content whatever
// the WAL and the checkpoints did to the files.
func snapshot(t *testing.T, path string) string {
	t.Helper()
	conn, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rows, err := conn.Query(`SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	var out []string
	for _, table := range tables {
		if table == "availability_alive" {
			// The serving holder's own liveness beat (slo.Recorder), rewritten
			// every few seconds by design: a change by the holder, not by the
			// commands it refused.
			continue
		}
		rows, err := conn.Query(`SELECT * FROM "` + table + `"`)
		if err != nil {
			t.Fatal(err)
		}
		cols, _ := rows.Columns()
		var lines []string
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, fmt.Sprintf("%q", vals))
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		rows.Close()
		slices.Sort(lines)
		sum := sha256.Sum256([]byte(strings.Join(lines, "\n")))
		out = append(out, fmt.Sprintf("%s:%d:%s", table, len(lines), hex.EncodeToString(sum[:6])))
	}
	return strings.Join(out, " ")
}

// emptyReport writes a settlement report with its header only.
func emptyReport(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "empty.csv")
	header := "batch_number,merchant_id,psp_reference,merchant_reference,type,booking_date,currency,gross_amount,fee_amount,net_amount,card_last4,auth_code\n"
	if err := os.WriteFile(p, []byte(header), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
