package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

func init() { benches["online"] = benchOnline }

// benchOnline measures online card payments through storepay to one
// banksim answering in -latency, against the bound of the performance
// goal (p50 ≤ 1.1×, p99 ≤ 1.5× the bank's latency), and the bank alone
// under the same load in the same run: the same number of sales sent
// straight to banksim by as many clients, so what storepay adds is the
// difference.
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
	sale := func(i int) map[string]any { return cardBody(1000, "4242424242424242") }
	if _, err := e.store.load(ctx, "w", min(*n, 4**conc), *conc, sale); err != nil { // warm-up
		return err
	}
	res, err := e.store.load(ctx, "", *n, *conc, sale)
	if err != nil {
		return err
	}
	alone, err := bankAlone(ctx, e.banks[0], *n, *conc)
	if err != nil {
		return err
	}
	p50, p99 := res.percentile(50), res.percentile(99)
	fmt.Fprintf(stdout, "online card payments: storepay serve → banksim (latency %s) on loopback, %d payments, %d concurrent terminals\n", *latency, *n, *conc)
	fmt.Fprintf(stdout, "  payments/s          %8.0f\n", res.rate())
	fmt.Fprintf(stdout, "  latency p50         %8.2f ms  %.2fx the bank's latency (bound ≤ 1.10x)\n", ms(p50), ratio(p50, *latency))
	fmt.Fprintf(stdout, "  latency p99         %8.2f ms  %.2fx the bank's latency (bound ≤ 1.50x)\n", ms(p99), ratio(p99, *latency))
	fmt.Fprintf(stdout, "  outcomes            %v, errors %d %s\n", res.statuses, res.errors, res.firstErr)
	fmt.Fprintf(stdout, "the bank alone, same load, same run: p50 %.2f ms, p99 %.2f ms; storepay adds %.2f ms at p50, %.2f ms at p99\n",
		ms(alone.percentile(50)), ms(alone.percentile(99)), ms(p50-alone.percentile(50)), ms(p99-alone.percentile(99)))
	fmt.Fprintf(stdout, "raw SQLite single-row commits/s (WAL, synchronous=FULL, same disk, same run): %8.0f\n", raw)
	return nil
}

// bankAlone sends n sales straight to the bank from conc clients, as
// storepay's gateway would (acquirer-json, keep-alive connections).
func bankAlone(ctx context.Context, b *bank, n, conc int) (loadResult, error) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	defer client.CloseIdleConnections()
	res := loadResult{latencies: make([]time.Duration, 0, n), statuses: map[string]int{}}
	var next atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	stamp := time.Now().UnixNano()
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				body, _ := json.Marshal(map[string]any{"merchant_id": "bench", "terminal_id": "bench-lane",
					"reference": fmt.Sprintf("alone-%d-%d", stamp, i), "amount": 1000, "currency": "USD", "capture": true, "stored": false,
					"card": map[string]any{"pan": "4242424242424242", "exp_month": 12, "exp_year": 2030}})
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, b.urls[0]+"/v1/authorizations", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+b.key)
				req.Header.Set("Idempotency-Key", fmt.Sprintf("alone-%d-%d", stamp, i))
				req.Header.Set("Content-Type", "application/json")
				t0 := time.Now()
				r, err := client.Do(req)
				var status int
				if err == nil {
					io.Copy(io.Discard, r.Body)
					r.Body.Close()
					status = r.StatusCode
				}
				d := time.Since(t0)
				mu.Lock()
				if err != nil || status != http.StatusOK {
					res.errors++
					if res.firstErr == "" {
						res.firstErr = fmt.Sprintf("%d %v", status, err)
					}
				} else {
					res.latencies = append(res.latencies, d)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	if res.errors > 0 {
		return res, fmt.Errorf("the bank alone: %d errors (%s)", res.errors, res.firstErr)
	}
	return res, ctx.Err()
}
