package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"
)

func init() { benches["drain"] = benchDrain }

// benchDrain queues payments offline, then lets the forwarder drain them
// to a bank that answers in a fixed latency, and compares the time taken
// with the bound the forwarder's concurrency and rate limit allow:
// max(n / rate, n × latency / concurrency).
func benchDrain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("drain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	n := fs.Int("n", 10000, "payments to queue and drain")
	latency := fs.Duration("latency", 20*time.Millisecond, "the bank's answer latency")
	conc := fs.Int("concurrency", 16, "forwarder concurrency (forwarding.concurrency)")
	rate := fs.Float64("rate", 500, "forwarder rate limit per second (forwarding.rate_per_second)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *n <= 0 || *conc <= 0 || *rate <= 0 || *latency < 0 {
		return usagef("drain: -n, -concurrency and -rate must be positive, -latency not negative")
	}
	e, err := newEnv(ctx, c, stderr, []bankSpec{jsonBank()}, func(cfg map[string]any) {
		cfg["offline"].(map[string]any)["floor_limit"] = int64(1) << 40
		cfg["forwarding"] = map[string]any{"concurrency": *conc, "rate_per_second": *rate, "interval": "100ms"}
	})
	if err != nil {
		return err
	}
	defer e.close(stderr)
	s := e.store
	if err := s.estop(ctx, "pause"); err != nil {
		return err
	}
	res, err := s.load(ctx, "", *n, 32, func(i int) map[string]any {
		b := cardBody(100+i%5000, benchPAN(i))
		b["offline_behavior"] = "force_offline"
		return b
	})
	if err != nil {
		return err
	}
	if res.statuses["stored"] != *n {
		return fmt.Errorf("drain: only %d of %d payments were stored (%v, %s)", res.statuses["stored"], *n, res.statuses, res.firstErr)
	}
	if err := e.banks[0].setFaults(map[string]any{"latency": map[string]any{"fixed": latency.String()}}); err != nil {
		return err
	}
	start := time.Now()
	if err := s.estop(ctx, "go"); err != nil {
		return err
	}
	err = pollUntil(ctx, 10*time.Minute, 20*time.Millisecond, func() (bool, error) {
		v, err := s.metric(ctx, "storepay_saf_outstanding_count")
		return err == nil && v == 0, err
	})
	if err != nil {
		return fmt.Errorf("drain: waiting for the queue to empty: %w", err)
	}
	took := time.Since(start)
	byRate := time.Duration(float64(*n) / *rate * float64(time.Second))
	byLatency := time.Duration(*n) * *latency / time.Duration(*conc)
	bound := max(byRate, byLatency)
	l, err := e.banks[0].ledger()
	if err != nil {
		return err
	}
	charged := 0
	for _, a := range l.Authorizations {
		if a.Status == "approved" && a.Stored {
			charged++
		}
	}
	fmt.Fprintf(stdout, "draining %d queued payments to a bank answering in %s (concurrency %d, rate %.0f/s)\n", *n, *latency, *conc, *rate)
	fmt.Fprintf(stdout, "  bound: max(n/rate = %s, n×latency/concurrency = %s) = %s\n", byRate.Round(time.Millisecond), byLatency.Round(time.Millisecond), bound.Round(time.Millisecond))
	fmt.Fprintf(stdout, "  drained in %s: %.2f × the bound (target ≤ 1.20)\n", took.Round(time.Millisecond), took.Seconds()/bound.Seconds())
	fmt.Fprintf(stdout, "  bank charged %d stored advices for %d payments\n", charged, *n)
	return nil
}
