// Command storepay-sim is storepay's seeded simulator: it runs the real
// orders, saf, gateway and web code on a real SQLite file against
// in-process banks (the real bank simulator behind seeded faults), with a
// controlled clock, concurrent terminals that repeat requests as real ones
// do, a manager, full disks and crashes at commit boundaries, and checks
// on every seed that nothing was charged twice or lost (see check.go).
//
//	go run ./cmd/storepay-sim -seeds 1000
//	go run ./cmd/storepay-sim -seed 4242 -v     # one seed, its whole trace
//
// Its last line is "N seeds, V violations"; it exits 1 on any violation,
// naming the failing seeds. A seed fixes the workload, the faults and the
// clock, and replays the same run (docs/simulator.md says what may vary).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"sync"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, errViolations):
		os.Exit(1)
	case err != nil:
		fmt.Fprintln(os.Stderr, "storepay-sim:", err)
		os.Exit(2)
	}
}

var errViolations = errors.New("violations found")

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("storepay-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	seeds := fs.Int("seeds", 100, "how many seeds to run")
	first := fs.Int64("seed", 1, "the first seed (with -seeds 1, the only one)")
	verbose := fs.Bool("v", false, "print every seed's whole trace, not only a failing seed's end")
	parallel := fs.Int("p", runtime.GOMAXPROCS(0), "seeds run at once")
	steps := fs.Int("steps", 400, "steps of each seed's faulty phase")
	jsonOnly := fs.Bool("json-only", false, "both banks speak acquirer-json, as every world did before ISO 8583 (replays older seeds)")
	dir := fs.String("dir", "", "where seeds keep their databases (default: /dev/shm when it exists, else the temp dir)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 || *seeds < 1 || *parallel < 1 || *steps < 1 {
		return fmt.Errorf("usage: storepay-sim [-seeds N] [-seed S] [-v] [-p P] [-steps K] [-json-only] [-dir D]")
	}
	if *dir == "" {
		*dir = defaultDir()
	}
	if fs.Lookup("seed").Value.String() != "1" && !flagSet(fs, "seeds") {
		*seeds = 1
	}
	opts := options{dir: *dir, verbose: *verbose, steps: *steps, jsonOnly: *jsonOnly}
	start := time.Now()
	results := runSeeds(ctx, *first, *seeds, *parallel, opts)
	var total stats
	var failing []int64
	violations := 0
	for _, r := range results {
		total.add(r.stats)
		if *verbose {
			fmt.Fprintf(stdout, "seed %d trace:\n", r.seed)
			for _, l := range r.trace {
				fmt.Fprintln(stdout, "  ", l)
			}
		}
		if len(r.violations) == 0 {
			continue
		}
		failing = append(failing, r.seed)
		violations += len(r.violations)
		fmt.Fprintf(stdout, "seed %d: %d violations\n", r.seed, len(r.violations))
		for _, v := range r.violations {
			fmt.Fprintln(stdout, "  -", v)
		}
		if !*verbose {
			fmt.Fprintf(stdout, "  the trace's last lines (the whole trace: -seed %d -v):\n", r.seed)
			tail := r.trace[max(0, len(r.trace)-40):]
			for _, l := range tail {
				fmt.Fprintln(stdout, "    ", l)
			}
		}
	}
	took := time.Since(start)
	fmt.Fprintf(stdout, "total-queue over accepted payments: ok %d, lost %d, duplicated %d, unexpected %d, recovered %d\n",
		total.ok, total.lost, total.duplicated, total.unexpected, total.recovered)
	fmt.Fprintf(stdout, "%d payments, %d terminal requests, %d crashes; %.0f seeds a minute (%s, %d at once)\n",
		total.payments, total.requests, total.crashes, float64(len(results))/took.Minutes(), took.Round(time.Millisecond), *parallel)
	if len(failing) > 0 {
		fmt.Fprintf(stdout, "failing seeds: %v\n", failing)
	}
	fmt.Fprintf(stdout, "%d seeds, %d violations\n", len(results), violations)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if violations > 0 {
		return errViolations
	}
	return nil
}

func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}

// defaultDir is where seeds keep their databases: a memory file system
// when there is one (a crash is a process crash, which keeps the page
// cache: the fsyncs there cost nothing and lose nothing the simulator
// checks), else the temp dir.
func defaultDir() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return os.TempDir()
}

// runSeeds runs seeds first..first+n-1, parallel at a time, and returns
// their results in seed order. It stops starting seeds when ctx ends.
func runSeeds(ctx context.Context, first int64, n, parallel int, opts options) []result {
	out := make([]result, 0, n)
	var mu sync.Mutex
	next := make(chan int64)
	var wg sync.WaitGroup
	for i := 0; i < parallel; i++ {
		wg.Go(func() {
			for seed := range next {
				r := runSeed(seed, opts)
				mu.Lock()
				out = append(out, r)
				mu.Unlock()
			}
		})
	}
	for s := first; s < first+int64(n) && ctx.Err() == nil; s++ {
		next <- s
	}
	close(next)
	wg.Wait()
	sort.Slice(out, func(i, j int) bool { return out[i].seed < out[j].seed })
	return out
}
