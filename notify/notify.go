// Package notify tells systemd how storepay serve is doing, over the
// datagram socket systemd names in $NOTIFY_SOCKET (the sd_notify
// protocol): READY=1 once the service answers, WATCHDOG=1 while it is
// healthy, STOPPING=1 when it starts draining. A unit with Type=notify
// then orders dependants after a store that really serves, and
// WatchdogSec restarts one that hangs instead of leaving the tills on a
// dead service.
//
// Without $NOTIFY_SOCKET every call does nothing, so serve behaves the
// same outside systemd. The environment is read through an injected
// getenv so tests need not change the process's own.
package notify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Notifier sends state lines to the service manager. The zero value and
// a nil *Notifier send nothing.
type Notifier struct {
	socket string // "" when not run under a service manager
}

// New reads $NOTIFY_SOCKET through getenv. A path ("/run/...") or an
// abstract name ("@...", which Go's net package maps to the leading NUL
// byte) is accepted; anything else is an error rather than a silent
// no-op, because the unit would then wait for READY=1 until it times out.
func New(getenv func(string) string) (*Notifier, error) {
	s := getenv("NOTIFY_SOCKET")
	if s == "" {
		return &Notifier{}, nil
	}
	if !strings.HasPrefix(s, "/") && !strings.HasPrefix(s, "@") {
		return nil, fmt.Errorf("NOTIFY_SOCKET %q: only unix datagram sockets (a path or an @abstract name) are supported", s)
	}
	return &Notifier{socket: s}, nil
}

// Enabled reports whether a service manager listens.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// Send writes one datagram of newline-separated KEY=VALUE lines, e.g.
// "READY=1". It does nothing when no service manager listens.
func (n *Notifier) Send(lines ...string) error {
	if !n.Enabled() {
		return nil
	}
	for _, l := range lines {
		if strings.ContainsRune(l, '\n') || !strings.Contains(l, "=") {
			return fmt.Errorf("notify: %q is not one KEY=VALUE line", l)
		}
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("notify %s: %w", n.socket, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(strings.Join(lines, "\n") + "\n")); err != nil {
		return fmt.Errorf("notify %s: %w", n.socket, err)
	}
	return nil
}

// Ready says the service answers requests; status is a line for
// `systemctl status`.
func (n *Notifier) Ready(status string) error {
	return n.Send("READY=1", "STATUS="+oneLine(status))
}

// Stopping says the service is draining and will exit on its own.
func (n *Notifier) Stopping(status string) error {
	return n.Send("STOPPING=1", "STATUS="+oneLine(status))
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// WatchdogInterval is the interval systemd expects WATCHDOG=1 within
// ($WATCHDOG_USEC), or 0 when no watchdog is asked of this process: the
// variable is unset, malformed, or $WATCHDOG_PID names another process
// (a child that inherited the environment must not keep its parent's
// watchdog quiet).
func WatchdogInterval(getenv func(string) string, pid int) time.Duration {
	usec, err := strconv.ParseUint(getenv("WATCHDOG_USEC"), 10, 63)
	if err != nil || usec == 0 {
		return 0
	}
	if p := getenv("WATCHDOG_PID"); p != "" && p != strconv.Itoa(pid) {
		return 0
	}
	return time.Duration(usec) * time.Microsecond
}

// Watchdog sends WATCHDOG=1 every interval/2 (the margin sd_watchdog_enabled(3)
// recommends) for as long as healthy answers nil within that half
// interval, until ctx ends. When healthy fails it skips the ping, so a
// service whose database no longer answers is restarted by systemd rather
// than reported alive. It returns when ctx ends; an interval of 0 returns
// at once.
func (n *Notifier) Watchdog(ctx context.Context, interval time.Duration, healthy func(context.Context) error, onErr func(error)) {
	if !n.Enabled() || interval <= 0 {
		return
	}
	every := interval / 2
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		err := check(ctx, every, healthy)
		if err == nil {
			err = n.Send("WATCHDOG=1")
		}
		if err != nil && ctx.Err() == nil && onErr != nil {
			onErr(err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func check(ctx context.Context, within time.Duration, healthy func(context.Context) error) error {
	if healthy == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	if err := healthy(ctx); err != nil {
		return errors.Join(errors.New("watchdog: not healthy, WATCHDOG=1 withheld"), err)
	}
	return nil
}
