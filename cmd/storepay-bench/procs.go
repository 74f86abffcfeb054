package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// binaries are the programs the benches run as children.
type binaries struct{ storepay, banksim string }

// buildBinaries builds storepay and banksim from this module into a
// temporary folder, or takes them from dir when it is not empty. The
// returned function removes what was built.
func buildBinaries(ctx context.Context, dir string, stderr io.Writer) (binaries, func(), error) {
	if dir != "" {
		b := binaries{storepay: filepath.Join(dir, "storepay"), banksim: filepath.Join(dir, "banksim")}
		for _, p := range []string{b.storepay, b.banksim} {
			if _, err := os.Stat(p); err != nil {
				return b, nil, usagef("-bin: %v", err)
			}
		}
		return b, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "storepay-bench-bin-")
	if err != nil {
		return binaries{}, nil, err
	}
	b := binaries{storepay: filepath.Join(tmp, "storepay"), banksim: filepath.Join(tmp, "banksim")}
	for out, pkg := range map[string]string{b.storepay: "storepay/cmd/storepay", b.banksim: "storepay/cmd/banksim"} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
		cmd.Stdout, cmd.Stderr = stderr, stderr
		if err := cmd.Run(); err != nil {
			os.RemoveAll(tmp)
			return b, nil, fmt.Errorf("build %s (run from inside the storepay module, or pass -bin): %w", pkg, err)
		}
	}
	return b, func() { os.RemoveAll(tmp) }, nil
}

// child is a process the bench started; its stderr goes to a log file,
// whose last lines an error quotes.
type child struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// startChild starts name with args; stdout is returned for the caller to
// read the lines a child prints on start (and must be drained).
func startChild(logDir, logName string, env []string, name string, args ...string) (*child, io.ReadCloser, error) {
	logPath := filepath.Join(logDir, logName+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, fmt.Errorf("start %s: %w", logName, err)
	}
	c := &child{name: logName, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	return c, stdout, nil
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// kill ends the child at once (SIGKILL) and waits for it.
func (c *child) kill() {
	if c.exited() {
		return
	}
	c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// stop asks the child to stop (SIGTERM), and kills it after timeout.
func (c *child) stop(timeout time.Duration) error {
	if c.exited() {
		return c.err
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return c.err
	case <-time.After(timeout):
		c.kill()
		return fmt.Errorf("%s did not stop within %s of SIGTERM", c.name, timeout)
	}
}

// tail is the end of the child's log, for an error message.
func (c *child) tail() string {
	b, _ := os.ReadFile(c.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

// pid is the child's process id.
func (c *child) pid() int { return c.cmd.Process.Pid }

// readLines reads the child's start-up lines from stdout until want says
// it has seen enough, or until timeout; the rest of stdout is drained.
func readLines(c *child, stdout io.ReadCloser, timeout time.Duration, want func(line string) bool) error {
	t := time.AfterFunc(timeout, c.kill)
	defer t.Stop()
	sc := bufio.NewScanner(stdout)
	done := false
	for !done && sc.Scan() {
		done = want(sc.Text())
	}
	go io.Copy(io.Discard, stdout)
	if !done {
		return fmt.Errorf("%s did not start: %s", c.name, c.tail())
	}
	return nil
}

// loopback refuses any URL that is not on loopback: the benches load
// nothing else.
func loopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("refusing to load a non-loopback address %s", u.Host)
	}
	return nil
}

// freePort finds a loopback port that is free now, for a child whose
// listen address goes into its config.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// pollUntil calls f every interval until it reports done, fails, or
// timeout passes.
func pollUntil(ctx context.Context, timeout, interval time.Duration, f func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := f()
		if err != nil || ok {
			return err
		}
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}
