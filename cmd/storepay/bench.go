package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"storepay/devices"
	"storepay/gateway/banksim"
	"storepay/migrations"
)

// runBench measures storepay on this machine and prints figures. It only
// ever talks to loopback and stops by itself.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if path := os.Getenv("STOREPAY_CPUPROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if len(args) == 0 {
		return &exitError{code: 2, err: errors.New("bench: say which: online, failover, offline, drain or reconcile")}
	}
	switch args[0] {
	case "online":
		return benchOnline(ctx, args[1:], stdout, stderr)
	case "failover":
		return benchFailover(ctx, args[1:], stdout, stderr)
	case "offline":
		return benchOffline(ctx, args[1:], stdout, stderr)
	case "drain":
		return benchDrain(ctx, args[1:], stdout, stderr)
	case "reconcile":
		return benchReconcile(ctx, args[1:], stdout, stderr)
	}
	return &exitError{code: 2, err: fmt.Errorf("bench: unknown benchmark %q", args[0])}
}

func benchOnline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench online", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 2000, "payments to make")
	conc := fs.Int("c", 16, "concurrent terminals")
	dir := fs.String("dir", "", "`folder` on the disk to measure (default: the system's temp folder)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	env, err := newBenchEnv(ctx, *dir, 1)
	if err != nil {
		return err
	}
	defer env.Close()
	raw, err := rawCommitRate(env.dir, 2*time.Second)
	if err != nil {
		return err
	}
	res, err := env.load(ctx, *n, *conc, func(i int) map[string]any {
		return map[string]any{"method": "card", "amount": 1000, "capture": true,
			"card": map[string]any{"pan": "4242424242424242", "exp_month": 12, "exp_year": 2030}}
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "online card payments through storepay → banksim on loopback (%d payments, %d concurrent terminals)\n", *n, *conc)
	fmt.Fprintf(stdout, "  payments/s          %8.0f\n", res.rate())
	fmt.Fprintf(stdout, "  latency p50         %8.2f ms\n", ms(res.percentile(50)))
	fmt.Fprintf(stdout, "  latency p99         %8.2f ms\n", ms(res.percentile(99)))
	fmt.Fprintf(stdout, "  errors              %8d\n", res.errors)
	fmt.Fprintf(stdout, "raw SQLite single-row commits/s (WAL, synchronous=FULL, same disk, same run): %8.0f\n", raw)
	return nil
}

// cpuSince returns a function that reports the process CPU time used
// since cpuSince was called (0 where it is not measured).
func cpuSince() func() time.Duration {
	c0, ok0 := processCPU()
	return func() time.Duration {
		c1, ok1 := processCPU()
		if !ok0 || !ok1 {
			return 0
		}
		return c1 - c0
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// benchEnv is storepay plus simulated banks in this process, on loopback.
type benchEnv struct {
	dir      string
	app      *App
	sims     []*banksim.Sim
	terminal string
	client   *http.Client
}

func newBenchEnv(ctx context.Context, parent string, banks int, opts ...func(*Config)) (*benchEnv, error) {
	dir, err := os.MkdirTemp(parent, "storepay-bench-")
	if err != nil {
		return nil, err
	}
	e := &benchEnv{dir: dir, client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}}
	quiet := slog.New(slog.NewJSONHandler(io.Discard, nil))
	env := map[string]string{"STOREPAY_CARD_KEY": randomHex(32)}
	cfg := Config{StoreID: "bench", Listen: "127.0.0.1:0", Database: filepath.Join(dir, "storepay.db"),
		CardKeyEnv: "STOREPAY_CARD_KEY",
		Offline:    OfflineConfig{FloorLimit: defaultFloorLimit, TotalLimit: 1 << 40, MaxAge: Duration{defaultMaxAge}}}
	for i := 0; i < banks; i++ {
		sim := banksim.New(banksim.Config{APIKey: "bench", Logger: quiet})
		e.sims = append(e.sims, sim)
		u, err := sim.Listen("127.0.0.1:0")
		if err != nil {
			e.Close()
			return nil, err
		}
		name := fmt.Sprintf("bank-%c", 'a'+i)
		env["KEY_"+name] = "bench"
		cfg.Gateways = append(cfg.Gateways, GatewayConfig{Name: name, Protocol: "acquirer-json", URLs: []string{u},
			MerchantID: "bench", APIKeyEnv: "KEY_" + name})
	}
	for _, o := range opts {
		o(&cfg)
	}
	app, err := OpenApp(ctx, cfg, func(k string) string { return env[k] }, quiet)
	if err != nil {
		e.Close()
		return nil, err
	}
	e.app = app
	if e.terminal, err = app.Devices.Enroll(ctx, "bench-lane", devices.RoleTerminal); err != nil {
		e.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.Close()
		return nil, err
	}
	app.Start(ln)
	return e, nil
}

func (e *benchEnv) Close() {
	if e.app != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		e.app.Close(ctx)
		cancel()
	}
	for _, s := range e.sims {
		s.Close()
	}
	os.RemoveAll(e.dir)
}

// post sends one JSON POST to storepay (only ever on loopback).
func (e *benchEnv) post(ctx context.Context, path, key string, body any) (int, []byte, error) {
	u, err := url.Parse(e.app.URL() + path)
	if err != nil {
		return 0, nil, err
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		return 0, nil, fmt.Errorf("bench: refusing to load a non-loopback address %s", u.Host)
	}
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+e.terminal)
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Content-Type", "application/json")
	res, err := e.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	return res.StatusCode, out, err
}

// loadResult holds the latencies of one load run.
type loadResult struct {
	latencies []time.Duration
	elapsed   time.Duration
	cpu       time.Duration // process CPU time over elapsed; 0 if not measured
	errors    int
	statuses  map[string]int
}

func (r loadResult) rate() float64 { return float64(len(r.latencies)) / r.elapsed.Seconds() }

// cpuPer is the process CPU time per request, and how many of the
// machine's cores the run kept busy on average.
func (r loadResult) cpuPer(n int) (per time.Duration, cores float64) {
	if n == 0 || r.elapsed <= 0 {
		return 0, 0
	}
	return r.cpu / time.Duration(n), float64(r.cpu) / float64(r.elapsed)
}

func (r loadResult) percentile(p float64) time.Duration {
	if len(r.latencies) == 0 {
		return 0
	}
	s := slices.Clone(r.latencies)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p/100))]
}

// load makes n payments from conc concurrent terminals, each on an order
// of its own made beforehand, and times only the payment requests.
func (e *benchEnv) load(ctx context.Context, n, conc int, body func(i int) map[string]any) (loadResult, error) {
	orders := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr error
	var mu sync.Mutex
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				amount := body(i)["amount"].(int) + 100
				status, out, err := e.post(ctx, "/v1/orders", fmt.Sprintf("o-%d", i), map[string]any{"channel": "walk_in", "currency": "USD",
					"lines": []map[string]any{{"sku": "BENCH", "quantity": 1, "unit_amount": amount}}})
				if err == nil && status != 201 {
					err = fmt.Errorf("create order: %d %s", status, out)
				}
				if err != nil {
					mu.Lock()
					firstErr = err
					mu.Unlock()
					return
				}
				var o struct{ ID string }
				json.Unmarshal(out, &o)
				orders[i] = o.ID
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return loadResult{}, firstErr
	}
	res := loadResult{latencies: make([]time.Duration, 0, n), statuses: map[string]int{}}
	next.Store(0)
	cpu := cpuSince()
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				status, out, err := e.post(ctx, "/v1/orders/"+orders[i]+"/payments", fmt.Sprintf("p-%d", i), body(i))
				d := time.Since(t0)
				var p struct{ Status string }
				json.Unmarshal(out, &p)
				mu.Lock()
				if err != nil || status != 201 {
					res.errors++
				} else {
					res.latencies = append(res.latencies, d)
					res.statuses[p.Status]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.elapsed, res.cpu = time.Since(start), cpu()
	return res, ctx.Err()
}

// rawCommitRate measures single-row durable commits per second on a
// fresh SQLite file in dir, one transaction per row, WAL and
// synchronous=FULL: the floor any durable store on this disk sits on.
func rawCommitRate(dir string, d time.Duration) (float64, error) {
	f, err := os.CreateTemp(dir, "raw-commits-*.db")
	if err != nil {
		return 0, err
	}
	f.Close()
	path := f.Name()
	defer os.Remove(path)
	defer os.Remove(path + "-wal")
	defer os.Remove(path + "-shm")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)`); err != nil {
		return 0, err
	}
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		if _, err := db.Exec(`INSERT INTO t (v) VALUES (?)`, migrations.FormatTime(time.Now())); err != nil {
			return 0, err
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
