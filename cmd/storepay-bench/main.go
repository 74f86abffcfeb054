// Command storepay-bench measures storepay on this machine and prints
// figures beside the bounds they are compared to (docs/performance.md
// records them with the commands). It drives real processes: a
// `storepay serve` child and banksim children, built from this module
// into a temporary folder (or taken from -bin), talking HTTP or ISO 8583
// on loopback only. Every bench is bounded in count and time and stops by
// itself. It is not part of the production binary and not run in CI.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return
	}
	fmt.Fprintln(os.Stderr, "storepay-bench:", err)
	var ue *usageError
	if errors.As(err, &ue) {
		os.Exit(2)
	}
	os.Exit(1)
}

// usageError is a bad command line: exit code 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

const usage = `usage: storepay-bench <bench> [flags]

benches (each accepts -h for its flags; -bin DIR uses prebuilt storepay and
banksim binaries instead of building them):
  online [-n N] [-c C] [-latency D]     online card payments: p50/p99 against the bank's latency
  protocols [-n N] [-latency D]         online p50/p99 through an ISO 8583 gateway beside a JSON one
  failover [-outage refuse|blackhole]   latency before, during and after a primary bank outage
  offline [-n N] [-c C]                 offline acceptance: rate and CPU beside a bare fsyncing server
  drain [-n N] [-latency D]             store-and-forward drain time against its bound
  restart [-queued N] [-payments N]     time to /readyz with a long queue and history; forwarding order
  soak [-duration D] [-interval D]      one busy store: RSS, goroutines, files, WAL, p99 per interval
  reconcile [-n N]                      reconciliation time and memory beside the sqlite3 shell
  hq [-stores N] [-rate R] [-cut K] [-outage D]
                                        headquarters ingest (events/s) and catch-up after K stores were cut off
`

// benches maps a bench's name to its function.
var benches = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{}

// hidden are internal subcommands the benches run as children of
// themselves; they are not listed in the usage.
var hidden = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) error{}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usagef("say which bench to run")
	}
	name, rest := args[0], args[1:]
	if name == "help" || name == "-h" || name == "--help" {
		fmt.Fprint(stdout, usage)
		return nil
	}
	f, ok := benches[name]
	if !ok {
		f, ok = hidden[name]
	}
	if !ok {
		fmt.Fprint(stderr, usage)
		return usagef("unknown bench %q", name)
	}
	return f(ctx, rest, stdout, stderr)
}

// parseFlags parses a bench's flags and refuses stray arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err}
	}
	if fs.NArg() > 0 {
		return usagef("%s: unexpected arguments %q", fs.Name(), fs.Args())
	}
	return nil
}
