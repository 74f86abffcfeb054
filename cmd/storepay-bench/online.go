package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"
)

func init() { benches["online"] = benchOnline }

// benchOnline measures online card payments through storepay to one
// banksim answering in -latency: payments/s and p50/p99 latency.
func benchOnline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("online", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	n := fs.Int("n", 2000, "payments to make")
	conc := fs.Int("c", 16, "concurrent terminals")
	latency := fs.Duration("latency", 20*time.Millisecond, "the bank's answer latency")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *n <= 0 || *conc <= 0 || *latency < 0 {
		return usagef("online: -n and -c must be positive, -latency not negative")
	}
	e, err := newEnv(ctx, c, stderr, []bankSpec{{protocol: "acquirer-json", args: []string{"-latency", latency.String()}}}, nil)
	if err != nil {
		return err
	}
	defer e.close(stderr)
	raw, err := rawCommitRate(e.dir, 2*time.Second)
	if err != nil {
		return err
	}
	res, err := e.store.load(ctx, "", *n, *conc, func(i int) map[string]any { return cardBody(1000, "4242424242424242") })
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "online card payments: storepay serve → banksim (latency %s) on loopback, %d payments, %d concurrent terminals\n", *latency, *n, *conc)
	fmt.Fprintf(stdout, "  payments/s          %8.0f\n", res.rate())
	fmt.Fprintf(stdout, "  latency p50         %8.2f ms\n", ms(res.percentile(50)))
	fmt.Fprintf(stdout, "  latency p99         %8.2f ms\n", ms(res.percentile(99)))
	fmt.Fprintf(stdout, "  outcomes            %v, errors %d %s\n", res.statuses, res.errors, res.firstErr)
	fmt.Fprintf(stdout, "raw SQLite single-row commits/s (WAL, synchronous=FULL, same disk, same run): %8.0f\n", raw)
	return nil
}
