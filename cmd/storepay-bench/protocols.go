package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"
)

func init() { benches["protocols"] = benchProtocols }

// benchProtocols measures online card payments through an ISO 8583
// gateway beside an acquirer-json gateway, at the same bank latency: the
// same load against a store whose only bank is a banksim of each
// protocol, run one after the other, rounds times alternately so that a
// noisy neighbour does not favour one protocol.
func benchProtocols(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("protocols", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	n := fs.Int("n", 2000, "payments per protocol and round")
	conc := fs.Int("c", 16, "concurrent terminals")
	latency := fs.Duration("latency", 20*time.Millisecond, "the bank's answer latency, both protocols")
	rounds := fs.Int("rounds", 2, "rounds, each protocol once per round")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *n <= 0 || *conc <= 0 || *latency < 0 || *rounds <= 0 {
		return usagef("protocols: -n, -c and -rounds must be positive, -latency not negative")
	}
	bins, cleanup, err := buildBinaries(ctx, c.bin, stderr)
	if err != nil {
		return err
	}
	defer cleanup()
	c.bin = filepath.Dir(bins.storepay) // every run uses these
	all := map[string][]time.Duration{}
	fmt.Fprintf(stdout, "online card payments, one bank answering in %s, %d payments per run, %d concurrent terminals\n", *latency, *n, *conc)
	fmt.Fprintf(stdout, "  %-14s %5s %10s %10s %10s %8s\n", "protocol", "round", "payments/s", "p50 ms", "p99 ms", "errors")
	for r := 1; r <= *rounds; r++ {
		for _, proto := range []string{"acquirer-json", "iso8583"} {
			res, err := onlineRun(ctx, c, stderr, bankSpec{protocol: proto, args: []string{"-latency", latency.String()}}, *n, *conc)
			if err != nil {
				return fmt.Errorf("%s: %w", proto, err)
			}
			if res.errors > 0 || res.statuses["captured"] != *n {
				return fmt.Errorf("%s: %v, %d errors (%s)", proto, res.statuses, res.errors, res.firstErr)
			}
			all[proto] = append(all[proto], res.latencies...)
			fmt.Fprintf(stdout, "  %-14s %5d %10.0f %10.2f %10.2f %8d\n", proto, r, res.rate(), ms(res.percentile(50)), ms(res.percentile(99)), res.errors)
		}
	}
	for _, proto := range []string{"acquirer-json", "iso8583"} {
		lat := all[proto]
		fmt.Fprintf(stdout, "  %-14s  all: p50 %.2f ms (%.2fx the bank's latency), p99 %.2f ms (%.2fx)\n", proto,
			ms(percentile(lat, 50)), ratio(percentile(lat, 50), *latency), ms(percentile(lat, 99)), ratio(percentile(lat, 99), *latency))
	}
	return nil
}

// onlineRun starts a store with one bank of spec and makes n card sales
// from conc terminals.
func onlineRun(ctx context.Context, c common, stderr io.Writer, spec bankSpec, n, conc int) (loadResult, error) {
	e, err := newEnv(ctx, c, stderr, []bankSpec{spec}, nil)
	if err != nil {
		return loadResult{}, err
	}
	defer e.close(stderr)
	// A short warm-up: connections, prepared statements, the ISO sign-on.
	if _, err := e.store.load(ctx, "w", min(n, 2*conc), conc, func(i int) map[string]any { return cardBody(1000, "4242424242424242") }); err != nil {
		return loadResult{}, err
	}
	return e.store.load(ctx, "", n, conc, func(i int) map[string]any { return cardBody(1000, "4242424242424242") })
}

func ratio(d, of time.Duration) float64 {
	if of <= 0 {
		return 0
	}
	return float64(d) / float64(of)
}
