// Command storepay is the store's payment service. See the README for the
// commands; run does the work, main only maps its error to an exit code.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"storepay/devices"
	"storepay/migrations"
	"storepay/notify"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(exitCode(err, os.Stderr))
}

// exitError carries a command's exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func exitCode(err error, stderr io.Writer) int {
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.err != nil && ee.err.Error() != "" {
			fmt.Fprintln(stderr, "storepay:", ee.err)
		}
		return ee.code
	}
	fmt.Fprintln(stderr, "storepay:", err)
	return 1
}

const usage = `usage: storepay <command> [flags]

commands:
  serve --config F                 run the service until SIGINT/SIGTERM
  demo [--dir D] [--listen A]      run everything locally with two simulated banks
  migrate --config F               bring the database schema up to date
  devices enroll --config F --name N --role terminal|manager
                                   register a device; prints its bearer token
  devices list --config F           every device: role, health, last seen (time, address)
  devices revoke --config F --name N [--reason R]
                                   refuse the device's token (and its console sessions) at once
  reconcile --config F --date YYYY-MM-DD [--settlement NAME=PATH ...]
                                   the nightly batch: exit 0 all matched, 1 discrepancies, 2 could not run
  hq --config F                    run headquarters (the chain's hub) until SIGINT/SIGTERM
  hq enroll --config F --name N    make a headquarters API token; prints it
  backup --config F --to PATH      copy the database while serving (consistent, fsynced, never overwrites)
  restore --config F --from PATH   put a backup in place of a database moved aside (serve stopped)
  slo --config F --from T --to T [--json]
                                   service level of a window: exit 0 all objectives held, 1 one missed, 2 could not run
  gameday --plan F [--banksim B] [--dir D] [--json]
                                   rehearse a store's day with incidents against real processes on loopback

benchmarks are a program of their own: go run ./cmd/storepay-bench
`

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &exitError{code: 2, err: errors.New("no command given")}
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		return runServe(ctx, rest, getenv, stderr)
	case "demo":
		return runDemo(ctx, rest, getenv, stdout, stderr)
	case "migrate":
		return exitOne(runMigrate(ctx, rest, stdout, stderr))
	case "devices":
		return exitOne(runDevices(ctx, rest, getenv, stdout, stderr))
	case "reconcile":
		return runReconcile(ctx, rest, getenv, stdout, stderr)
	case "backup":
		return exitOne(runBackup(ctx, rest, stdout, stderr))
	case "restore":
		return exitOne(runRestore(ctx, rest, stdout, stderr))
	case "slo":
		return runSLO(ctx, rest, stdout, stderr)
	case "hq":
		return runHQ(ctx, rest, getenv, stdout, stderr)
	case "gameday":
		return runGameday(ctx, rest, stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return &exitError{code: 2, err: fmt.Errorf("unknown command %q", cmd)}
	}
}

// exitOne gives a command the contract's two exits, 0 ok and 1 failed
// (migrate, devices enroll): a usage error is a failure like any other.
func exitOne(err error) error {
	var ee *exitError
	if errors.As(err, &ee) && ee.code > 1 {
		ee.code = 1
	}
	return err
}

// parseFlags parses a command's flags and refuses stray arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return &exitError{code: 2, err: err}
	}
	if fs.NArg() > 0 {
		return &exitError{code: 2, err: fmt.Errorf("%s: unexpected arguments %q", fs.Name(), fs.Args())}
	}
	return nil
}

func loadConfigFlag(path string) (Config, error) {
	if path == "" {
		return Config{}, &exitError{code: 2, err: errors.New("--config is required")}
	}
	return LoadConfig(path)
}

// configOnly parses the flags of a command whose only flag is --config
// and loads that config.
func configOnly(name string, args []string, stderr io.Writer) (Config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config `file` (JSON)")
	if err := parseFlags(fs, args); err != nil {
		return Config{}, err
	}
	return loadConfigFlag(*path)
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var lvl slog.Level
	lvl.UnmarshalText([]byte(level))
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl}))
}

// lockDatabase takes the database's lock (migrations.Lock) for a command
// that runs payments or changes the schema (serve, demo, migrate), so
// that a second one on the same database is refused, naming the process
// that holds it, instead of running beside it: one process runs the
// payment machine's workers and holds its leases. reconcile and devices
// enroll take no lock: they run no payment, write only their own rows in
// short transactions that SQLite serializes with serve's, and the
// contract's nightly cron runs reconcile beside a store that never stops
// selling. A refusal exits with code; release gives the lock back
// (exiting does too, crash included).
func lockDatabase(cmd, path string, code int) (release func() error, err error) {
	release, err = migrations.Lock(path)
	if err != nil {
		return nil, &exitError{code: code, err: fmt.Errorf("%s: %w", cmd, err)}
	}
	return release, nil
}

func runServe(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) (err error) {
	cfg, err := configOnly("serve", args, stderr)
	if err != nil {
		return err
	}
	notifier, err := notify.New(getenv)
	if err != nil {
		return err
	}
	release, err := lockDatabase("serve", cfg.Database, 1)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, release()) }()
	log := newLogger(stderr, cfg.LogLevel)
	app, err := OpenApp(ctx, cfg, getenv, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		app.Close(context.Background())
		return fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	app.Start(ln)
	stopWatchdog := tellSystemd(ctx, notifier, app, getenv)
	<-ctx.Done()
	stopWatchdog()
	if err := notifier.Stopping("draining requests in flight"); err != nil {
		log.Warn("systemd notify", "err", err)
	}
	return shutdown(app, cfg, log)
}

// tellSystemd sends READY=1 now that serve answers and keeps the
// watchdog fed while the database answers a read (see package notify);
// the returned func stops the watchdog. Outside systemd it does nothing.
func tellSystemd(ctx context.Context, n *notify.Notifier, app *App, getenv func(string) string) (stop func()) {
	if err := n.Ready("serving on " + app.ln.Addr().String()); err != nil {
		app.Log.Warn("systemd notify", "err", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Watchdog(ctx, notify.WatchdogInterval(getenv, os.Getpid()), func(ctx context.Context) error {
			return app.DB.Read().QueryRowContext(ctx, "SELECT 1").Scan(new(int))
		}, func(err error) { app.Log.Error("systemd watchdog", "err", err) })
	}()
	return func() { cancel(); <-done }
}

func shutdown(app *App, cfg Config, log *slog.Logger) error {
	timeout := cfg.ShutdownTimeout.Duration
	if timeout <= 0 {
		timeout = 35 * time.Second // a card decision takes at most 30s
	}
	log.Info("shutting down: finishing requests in flight", "timeout", timeout.String())
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := app.Close(ctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped cleanly")
	return nil
}

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	cfg, err := configOnly("migrate", args, stderr)
	if err != nil {
		return err
	}
	release, err := lockDatabase("migrate", cfg.Database, 1)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, release()) }()
	db, err := migrations.Open(ctx, cfg.Database)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer db.Close()
	list, _ := migrations.List()
	fmt.Fprintf(stdout, "database %s is at schema version %d\n", cfg.Database, list[len(list)-1].Version)
	return nil
}

func runEnroll(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("devices enroll", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config `file` (JSON)")
	name := fs.String("name", "", "device `name`: the terminal_id recorded on its payments")
	role := fs.String("role", "", "terminal or manager")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *name == "" || *role == "" {
		return &exitError{code: 2, err: errors.New("devices enroll: --name and --role are required")}
	}
	cfg, err := loadConfigFlag(*path)
	if err != nil {
		return err
	}
	// No lock: enrolling is one insert, beside a serving store too (see
	// lockDatabase).
	db, err := migrations.Open(ctx, cfg.Database)
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	defer db.Close()
	token, err := (&devices.Registry{DB: db}).EnrollFrom(ctx, *name, devices.Role(*role), cliOrigin(getenv))
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, token)
	return nil
}
