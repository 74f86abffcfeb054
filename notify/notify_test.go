package notify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// listen opens a datagram socket as systemd does and returns its name
// for $NOTIFY_SOCKET.
func listen(t *testing.T, abstract bool) (*net.UnixConn, string) {
	t.Helper()
	name := filepath.Join(t.TempDir(), "notify.sock")
	if abstract {
		name = fmt.Sprintf("@storepay-notify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
	}
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, name
}

func read(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func TestSendsToPathAndAbstractSockets(t *testing.T) {
	for _, abstract := range []bool{false, true} {
		c, name := listen(t, abstract)
		n, err := New(env("NOTIFY_SOCKET", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Ready("serving on 127.0.0.1:1\nsecond line"); err != nil {
			t.Fatal(err)
		}
		if got := read(t, c); got != "READY=1\nSTATUS=serving on 127.0.0.1:1 second line\n" {
			t.Fatalf("%s: got %q", name, got)
		}
		if err := n.Stopping("draining"); err != nil {
			t.Fatal(err)
		}
		if got := read(t, c); !strings.HasPrefix(got, "STOPPING=1\n") {
			t.Fatalf("%s: got %q", name, got)
		}
	}
}

func TestWithoutSocketNothingIsSent(t *testing.T) {
	n, err := New(env())
	if err != nil || n.Enabled() {
		t.Fatalf("New: %v %v", n, err)
	}
	if err := n.Ready("x"); err != nil {
		t.Fatal(err)
	}
	var nilN *Notifier
	if err := nilN.Send("READY=1"); err != nil {
		t.Fatal(err)
	}
	if _, err := New(env("NOTIFY_SOCKET", "vsock:2:1234")); err == nil {
		t.Fatal("an unsupported socket must be an error, not a unit that never gets READY=1")
	}
	_, name := listen(t, false)
	n, _ = New(env("NOTIFY_SOCKET", name))
	if err := n.Send("READY=1\nWATCHDOG=1"); err == nil {
		t.Fatal("a line with a newline must be refused")
	}
}

func TestWatchdogInterval(t *testing.T) {
	for _, c := range []struct {
		usec, pid string
		want      time.Duration
	}{
		{"", "", 0}, {"abc", "", 0}, {"0", "", 0}, {"-5", "", 0},
		{"20000000", "", 20 * time.Second},
		{"20000000", "77", 20 * time.Second},
		{"20000000", "78", 0},
	} {
		if got := WatchdogInterval(env("WATCHDOG_USEC", c.usec, "WATCHDOG_PID", c.pid), 77); got != c.want {
			t.Errorf("usec %q pid %q: %v, want %v", c.usec, c.pid, got, c.want)
		}
	}
}

// The watchdog pings at half the interval while healthy and withholds
// the ping while not.
func TestWatchdogPingsOnlyWhileHealthy(t *testing.T) {
	c, name := listen(t, true)
	n, _ := New(env("NOTIFY_SOCKET", name))
	var sick atomic.Bool
	var errs atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Watchdog(ctx, 100*time.Millisecond, func(context.Context) error {
			if sick.Load() {
				return errors.New("database does not answer")
			}
			return nil
		}, func(error) { errs.Add(1) })
	}()
	for i := 0; i < 3; i++ {
		if got := read(t, c); got != "WATCHDOG=1\n" {
			t.Fatalf("got %q", got)
		}
	}
	sick.Store(true)
	deadline := time.Now().Add(5 * time.Second)
	for errs.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if errs.Load() < 2 {
		t.Fatal("an unhealthy check was not reported")
	}
	// Drain pings sent before the sickness, then expect silence for
	// several intervals.
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	buf := make([]byte, 64)
	quiet := 0
	for {
		if _, err := c.Read(buf); err != nil {
			break
		}
		quiet++
	}
	if quiet > 1 {
		t.Fatalf("%d pings arrived while unhealthy", quiet)
	}
	cancel()
	<-done
}
