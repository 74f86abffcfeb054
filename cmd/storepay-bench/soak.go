package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func init() { benches["soak"] = benchSoak }

// benchSoak runs one busy store for a while: terminals paying
// continuously, the bank down for a spell at regular intervals (payments
// then go offline and are forwarded once it is back), and one crash
// (SIGKILL, then a restart) half way. Every interval it prints what must
// stay flat after warm-up: the serve process's RSS, goroutines and open
// files, the WAL's size, and the interval's p99.
func benchSoak(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("soak", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	duration := fs.Duration("duration", 30*time.Minute, "how long the store runs")
	interval := fs.Duration("interval", time.Minute, "how often the figures are printed")
	conc := fs.Int("c", 64, "terminals")
	think := fs.Duration("think", 500*time.Millisecond, "pause of each terminal between payments")
	outageEvery := fs.Duration("outage-every", 5*time.Minute, "how often the bank goes down")
	outageFor := fs.Duration("outage-for", 30*time.Second, "how long each outage lasts")
	crash := fs.Bool("crash", true, "SIGKILL serve half way and start it again")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	switch {
	case *duration <= 0 || *duration > 24*time.Hour, *interval <= 0 || *interval > *duration,
		*conc <= 0, *think < 0, *outageEvery <= 0, *outageFor < 0 || *outageFor >= *outageEvery:
		return usagef("soak: -duration in (0, 24h], -interval in (0, duration], -c positive, -outage-for shorter than -outage-every")
	}
	e, err := newEnv(ctx, c, stderr, []bankSpec{{protocol: "acquirer-json", args: []string{"-latency", "20ms"}}}, func(cfg map[string]any) {
		cfg["forwarding"] = map[string]any{"interval": "1s"}
	})
	if err != nil {
		return err
	}
	defer e.close(stderr)
	s := e.store

	var mu sync.Mutex
	var window []time.Duration
	var paid, stored, failed atomic.Int64
	var restarting atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range *conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(*think):
				}
				if restarting.Load() {
					continue
				}
				key := fmt.Sprintf("%d-%d-%d", w, i, time.Now().UnixNano())
				status, out, err := s.post(ctx, "/v1/orders", "o"+key, map[string]any{"channel": "walk_in", "currency": "USD",
					"lines": []map[string]any{{"sku": "SOAK", "quantity": 1, "unit_amount": 100 + i%4000}}})
				if err != nil || status != 201 {
					failed.Add(1)
					continue
				}
				var o struct{ ID string }
				json.Unmarshal(out, &o)
				t0 := time.Now()
				status, out, err = s.post(ctx, "/v1/orders/"+o.ID+"/payments", "p"+key, cardBody(100+i%4000, benchPAN(w*1_000_000+i)))
				d := time.Since(t0)
				if err != nil || status != 201 {
					failed.Add(1)
					continue
				}
				var p struct{ Status string }
				json.Unmarshal(out, &p)
				if p.Status == "stored" {
					stored.Add(1)
				}
				paid.Add(1)
				mu.Lock()
				window = append(window, d)
				mu.Unlock()
			}
		}()
	}

	fmt.Fprintf(stdout, "soak: %d terminals (one payment each per %s), bank (20 ms) down %s every %s, crash half way: %v; every %s:\n",
		*conc, *think, *outageFor, *outageEvery, *crash, *interval)
	fmt.Fprintf(stdout, "  %6s %8s %8s %6s %8s %8s %10s %6s %8s %9s\n", "min", "paid", "stored", "failed", "p99 ms", "RSS MB", "goroutines", "files", "WAL MB", "bank")
	start := time.Now()
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	outageTick := time.NewTicker(*outageEvery)
	defer outageTick.Stop()
	var outageEnd <-chan time.Time
	crashAt := time.After(*duration / 2)
	if !*crash {
		crashAt = nil
	}
	bankState := "up"
	end := time.After(*duration)
	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			runErr = ctx.Err()
			break loop
		case <-end:
			break loop
		case <-outageTick.C:
			if err := e.banks[0].setFaults(map[string]any{"refuse": true}); err != nil {
				runErr = err
				break loop
			}
			bankState = "down"
			outageEnd = time.After(*outageFor)
		case <-outageEnd:
			if err := e.banks[0].clearFaults(); err != nil {
				runErr = err
				break loop
			}
			bankState = "up"
		case <-crashAt:
			restarting.Store(true)
			s.proc.kill()
			ready, err := s.start(ctx)
			restarting.Store(false)
			if err != nil {
				runErr = err
				break loop
			}
			fmt.Fprintf(stdout, "  crash (SIGKILL) at %s; ready again %.0f ms after the restart\n", time.Since(start).Round(time.Second), ms(ready))
		case <-tick.C:
			mu.Lock()
			w := window
			window = nil
			mu.Unlock()
			rss, _ := procStatusKB(s.proc.pid(), "VmRSS")
			files := countFDs(s.proc.pid())
			gor, _ := s.metric(ctx, "go_goroutines")
			wal, _ := os.Stat(s.dbPath + "-wal")
			var walMB float64
			if wal != nil {
				walMB = float64(wal.Size()) / 1e6
			}
			fmt.Fprintf(stdout, "  %6.1f %8d %8d %6d %8.2f %8.1f %10.0f %6d %8.1f %9s\n", time.Since(start).Minutes(), paid.Load(), stored.Load(), failed.Load(),
				ms(percentile(w, 99)), float64(rss)/1024, gor, files, walMB, bankState)
		}
	}
	close(stop)
	wg.Wait()
	return runErr
}

// procStatusKB reads a "Name: N kB" line of /proc/<pid>/status.
func procStatusKB(pid int, name string) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+":"); ok {
			f := strings.Fields(v)
			if len(f) > 0 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("/proc/%d/status has no %s", pid, name)
}

// countFDs is how many files process pid has open (-1 if unknown).
func countFDs(pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return -1
	}
	return len(ents)
}
