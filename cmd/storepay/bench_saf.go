package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"storepay/gateway"
	"storepay/gateway/banksim"
	"storepay/migrations"
)

// benchOffline measures offline acceptance with every bank down: how many
// payments per second storepay acknowledges durably (stored), against the
// raw single-row durable commit rate of SQLite on the same disk in the
// same run.
func benchOffline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench offline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 20000, "payments to make")
	conc := fs.Int("c", 64, "concurrent terminals")
	dir := fs.String("dir", "", "`folder` on the disk to measure (default: the system's temp folder)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	env, err := newBenchEnv(ctx, *dir, 2, func(c *Config) {
		c.Offline.FloorLimit = 1 << 40
		c.Forwarding.Interval = Duration{-1} // measure acceptance, not forwarding
	})
	if err != nil {
		return err
	}
	defer env.Close()
	for _, s := range env.sims {
		s.SetFaults("", banksim.Faults{Refuse: true})
	}
	rawBefore, err := rawCommitRate(env.dir, 2*time.Second)
	if err != nil {
		return err
	}
	body := func(i int) map[string]any {
		return map[string]any{"method": "card", "amount": 100 + i%5000, "capture": true,
			"card": map[string]any{"pan": benchPAN(i), "exp_month": 12, "exp_year": 2030}}
	}
	res, err := env.load(ctx, *n, *conc, body)
	if err != nil {
		return err
	}
	ws := env.app.DB.WriterStats()
	floor, err := floorRate(ctx, env.dir, *n, *conc, body)
	if err != nil {
		return err
	}
	rawCPU := cpuSince()
	rawAfter, err := rawCommitRate(env.dir, 2*time.Second)
	if err != nil {
		return err
	}
	rawUsed := rawCPU()
	raw := (rawBefore + rawAfter) / 2
	fmt.Fprintf(stdout, "offline acceptance, every bank down, %d payments from %d concurrent terminals\n", *n, *conc)
	fmt.Fprintf(stdout, "  stored payments/s (durable, acknowledged)   %8.0f\n", res.rate())
	fmt.Fprintf(stdout, "  latency p50 / p99                           %8.2f / %.2f ms\n", ms(res.percentile(50)), ms(res.percentile(99)))
	fmt.Fprintf(stdout, "  outcomes                                    %v, errors %d\n", res.statuses, res.errors)
	fmt.Fprintf(stdout, "  raw SQLite single-row commits/s (before %.0f, after %.0f), mean %8.0f\n", rawBefore, rawAfter, raw)
	fmt.Fprintf(stdout, "  ratio stored/raw                            %8.2f\n", res.rate()/raw)
	floorRate := float64(*n) / floor.elapsed.Seconds()
	fmt.Fprintf(stdout, "  floor: bare net/http + one INSERT each, same writer   %8.0f/s (ratio to raw %.2f)\n", floorRate, floorRate/raw)
	if res.cpu > 0 && floor.cpu > 0 {
		per, cores := res.cpuPer(len(res.latencies))
		fper, fcores := floor.cpuPer(*n)
		// With every core busy, a machine of runtime.NumCPU() cores cannot
		// acknowledge more than cores/CPU-per-payment: the ceiling that no
		// batching of commits lifts.
		fmt.Fprintf(stdout, "  CPU per payment, whole process (terminals, HTTP, storepay, SQLite)\n")
		fmt.Fprintf(stdout, "    storepay %6.0f µs on %.2f cores busy: at most %6.0f/s on %d cores\n",
			float64(per.Microseconds()), cores, float64(runtime.NumCPU())/per.Seconds(), runtime.NumCPU())
		fmt.Fprintf(stdout, "    floor    %6.0f µs on %.2f cores busy: at most %6.0f/s on %d cores\n",
			float64(fper.Microseconds()), fcores, float64(runtime.NumCPU())/fper.Seconds(), runtime.NumCPU())
		if rawUsed > 0 {
			// The raw loop is one goroutine: what of each commit's time is
			// not CPU is the disk (the fsync).
			per := float64(rawUsed.Microseconds()) / (rawAfter * 2)
			fmt.Fprintf(stdout, "    raw      %6.0f µs per commit, of %.0f µs: the disk's share is the rest\n", per, 1e6/rawAfter)
		}
	}
	fmt.Fprintf(stdout, "  writer: %d commits, %.1f writes each, %.0f µs running writes and %.0f µs committing per commit\n",
		ws.Batches, float64(ws.Writes)/float64(max(ws.Batches, 1)), float64(ws.ExecTime.Microseconds())/float64(max(ws.Batches, 1)),
		float64(ws.CommitTime.Microseconds())/float64(max(ws.Batches, 1)))
	return nil
}

// benchPAN returns a Luhn-valid test card number that differs by i, so
// that per-card velocity limits are not what is measured.
func benchPAN(i int) string {
	return gateway.WithCheckDigit(fmt.Sprintf("45%013d", i%1_000_000_000)) // 45…: clear of the banks' test cards
}

// benchDrain queues payments offline, then lets the forwarder drain them
// to a bank that answers in a fixed latency, and compares the time taken
// with the bound the forwarder's concurrency and rate limit allow:
// max(n / rate, n × latency / concurrency).
func benchDrain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench drain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 10000, "payments to queue and drain")
	latency := fs.Duration("latency", 20*time.Millisecond, "the bank's answer latency")
	conc := fs.Int("concurrency", 16, "forwarder concurrency (forwarding.concurrency)")
	rate := fs.Float64("rate", 500, "forwarder rate limit per second (forwarding.rate_per_second)")
	dir := fs.String("dir", "", "`folder` on the disk to use (default: the system's temp folder)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	env, err := newBenchEnv(ctx, *dir, 1, func(c *Config) {
		c.Offline.FloorLimit = 1 << 40
		c.Forwarding = ForwardingConfig{Concurrency: *conc, RatePerSecond: *rate, Interval: Duration{100 * time.Millisecond}}
	})
	if err != nil {
		return err
	}
	defer env.Close()
	if _, err := env.app.SAF.SetEStop(ctx, "pause", "bench", "fill the queue first"); err != nil {
		return err
	}
	res, err := env.load(ctx, *n, 32, func(i int) map[string]any {
		return map[string]any{"method": "card", "amount": 100 + i%5000, "capture": true, "offline_behavior": "force_offline",
			"card": map[string]any{"pan": benchPAN(i), "exp_month": 12, "exp_year": 2030}}
	})
	if err != nil {
		return err
	}
	if res.statuses["stored"] != *n {
		return fmt.Errorf("bench drain: only %d of %d payments were stored (%v)", res.statuses["stored"], *n, res.statuses)
	}
	env.sims[0].SetFaults("", banksim.Faults{Latency: &banksim.Latency{Fixed: *latency}})
	start := time.Now()
	if _, err := env.app.SAF.SetEStop(ctx, "go", "bench", "drain"); err != nil {
		return err
	}
	for {
		st, err := env.app.SAF.Stats(ctx)
		if err != nil {
			return err
		}
		if st.OutstandingCount == 0 {
			break
		}
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("bench drain: %d records still queued after 10 minutes", st.OutstandingCount)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	byRate := time.Duration(float64(*n) / *rate * float64(time.Second))
	byLatency := time.Duration(*n) * *latency / time.Duration(*conc)
	bound := max(byRate, byLatency)
	l := env.sims[0].Ledger()
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

// floorRate is the yardstick for offline acceptance: the same load
// against the least a durable acceptor can do on this machine, net/http
// and JSON on loopback with one single-row INSERT per request through
// storepay's group-committing writer (synchronous=FULL). What separates
// storepay from it is storepay's own work per payment.
func floorRate(ctx context.Context, dir string, n, conc int, body func(i int) map[string]any) (loadResult, error) {
	db, err := migrations.Open(ctx, filepath.Join(dir, "floor.db"))
	if err != nil {
		return loadResult{}, err
	}
	defer db.Close()
	if err := db.Update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`CREATE TABLE floor (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, amount INTEGER NOT NULL, last4 TEXT NOT NULL)`)
		return err
	}); err != nil {
		return loadResult{}, err
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Amount int64
			Card   struct{ PAN string }
		}
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Card.PAN) < 4 {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		key := r.Header.Get("Idempotency-Key")
		err := db.Update(r.Context(), func(tx *sql.Tx) error {
			_, err := tx.Exec(`INSERT INTO floor (key, amount, last4) VALUES (?, ?, ?)`, key, req.Amount, req.Card.PAN[len(req.Card.PAN)-4:])
			return err
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"key": key, "status": "stored"})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return loadResult{}, err
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	defer client.CloseIdleConnections()
	u := "http://" + ln.Addr().String() + "/"
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	cpu := cpuSince()
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
				b, _ := json.Marshal(body(i))
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
				req.Header.Set("Idempotency-Key", fmt.Sprintf("f-%d", i))
				req.Header.Set("Content-Type", "application/json")
				res, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				io.Copy(io.Discard, res.Body)
				res.Body.Close()
				if res.StatusCode != http.StatusCreated {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	res := loadResult{elapsed: time.Since(start), cpu: cpu()}
	if f := failed.Load(); f > 0 {
		return loadResult{}, fmt.Errorf("floor: %d of %d requests failed", f, n)
	}
	return res, ctx.Err()
}
