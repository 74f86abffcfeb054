package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serve under systemd, end to end: the test plays the service manager,
// opening the $NOTIFY_SOCKET datagram socket (an abstract name, as
// systemd uses) and asking for a watchdog. serve must say READY=1 only
// once it answers HTTP, feed the watchdog at half its interval, and say
// STOPPING=1 when a signal makes it drain.
func TestServeNotifiesSystemd(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	db := filepath.Join(t.TempDir(), "sp.db")
	cfgText := strings.Replace(goodConfig, `"DB"`, `"`+db+`"`, 1)
	cfgText = strings.Replace(cfgText, `"127.0.0.1:8080"`, `"127.0.0.1:0"`, 1)
	cfgText = strings.Replace(cfgText, `"http://127.0.0.1:9101", "http://127.0.0.1:9102"`, `"`+b.urls[0]+`"`, 1)
	path := filepath.Join(t.TempDir(), "c.json")
	if err := os.WriteFile(path, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := fmt.Sprintf("@storepay-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const watchdog = 400 * time.Millisecond
	env := map[string]string{"STOREPAY_CARD_KEY": testCardKey, "BANK_A_KEY": b.key, "BANK_B_KEY": "x",
		"NOTIFY_SOCKET": sock, "WATCHDOG_USEC": fmt.Sprint(watchdog.Microseconds()), "WATCHDOG_PID": fmt.Sprint(os.Getpid())}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	var out, errb lockedBuffer
	go func() {
		done <- run(ctx, []string{"serve", "--config", path}, func(k string) string { return env[k] }, &out, &errb)
	}()
	next := func() (string, time.Time) {
		t.Helper()
		conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		buf := make([]byte, 4096)
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("no notify message: %v\nserve's log:\n%s", err, errb.String())
		}
		return string(buf[:n]), time.Now()
	}
	msg, _ := next()
	if !strings.HasPrefix(msg, "READY=1\nSTATUS=serving on 127.0.0.1:") {
		t.Fatalf("first message %q, want READY=1 with a status", msg)
	}
	// READY=1 means it answers: the address in the status takes requests.
	addr := strings.TrimSpace(strings.TrimPrefix(msg, "READY=1\nSTATUS=serving on "))
	res, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("READY=1 sent but %s does not answer: %v", addr, err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("healthz after READY=1: %d", res.StatusCode)
	}
	var pings []time.Time
	for len(pings) < 4 {
		msg, at := next()
		if msg != "WATCHDOG=1\n" {
			t.Fatalf("got %q, want WATCHDOG=1", msg)
		}
		pings = append(pings, at)
	}
	// Pings come more often than the interval systemd enforces (half
	// of it); a generous check that holds on a loaded machine.
	if gap := pings[3].Sub(pings[1]) / 2; gap >= watchdog {
		t.Fatalf("watchdog fed every %v, interval %v", gap, watchdog)
	}
	cancel()
	for {
		msg, _ := next()
		if msg == "WATCHDOG=1\n" {
			continue // sent before the signal
		}
		if !strings.HasPrefix(msg, "STOPPING=1\n") {
			t.Fatalf("got %q, want STOPPING=1", msg)
		}
		break
	}
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
	conn.SetReadDeadline(time.Now().Add(2 * watchdog))
	if n, err := conn.Read(make([]byte, 64)); err == nil {
		t.Fatalf("a message after STOPPING=1 (%d bytes): the watchdog outlived serve", n)
	}
}

// The example unit in docs/ asks for what serve does (Type=notify with a
// watchdog), runs serve with a config, and keeps its hardening; when
// systemd-analyze is installed it must accept the unit without a warning.
func TestExampleUnitFile(t *testing.T) {
	const path = "../../docs/storepay.service"
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][]string{}
	for _, line := range strings.Split(string(text), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			keys[k] = append(keys[k], v)
		}
	}
	for k, want := range map[string]string{
		"Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30s", "StateDirectory": "storepay",
		"ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes", "ProtectHome": "yes",
		"ExecStart":      "/usr/local/bin/storepay serve --config /etc/storepay/storepay.json",
		"TimeoutStopSec": "45s", "Restart": "on-failure",
	} {
		if got := keys[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
	// The stop timeout must outlast serve's default drain (35 s).
	if d, _ := time.ParseDuration(keys["TimeoutStopSec"][0]); d <= 35*time.Second {
		t.Errorf("TimeoutStopSec %v does not outlast shutdown_timeout's default 35s", d)
	}
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Log("systemd-analyze not installed: the unit's syntax is checked by the assertions above only")
		return
	}
	// verify wants ExecStart to exist: point it at this test binary.
	unit := filepath.Join(t.TempDir(), "storepay.service")
	os.WriteFile(unit, []byte(strings.ReplaceAll(string(text), "/usr/local/bin/storepay", os.Args[0])), 0o600)
	out, err := exec.Command(analyze, "verify", unit).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
