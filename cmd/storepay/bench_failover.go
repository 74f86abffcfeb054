package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"storepay/gateway/banksim"
)

// benchFailover measures payments before, during and after an outage of
// the primary bank, with the secondary healthy: latency per phase and the
// time from the outage to the first payment the secondary serves.
func benchFailover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench failover", flag.ContinueOnError)
	fs.SetOutput(stderr)
	conc := fs.Int("c", 8, "concurrent terminals")
	phase := fs.Duration("phase", 5*time.Second, "length of each phase (before, during, after)")
	mode := fs.String("outage", "refuse", "how the primary fails: refuse (connections refused) or blackhole (accepts, never answers)")
	dir := fs.String("dir", "", "`folder` on the disk to use (default: the system's temp folder)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var faults banksim.Faults
	switch *mode {
	case "refuse":
		faults.Refuse = true
	case "blackhole":
		faults.Blackhole = &banksim.Fault{}
	default:
		return &exitError{code: 2, err: fmt.Errorf("bench failover: --outage %q: use refuse or blackhole", *mode)}
	}
	env, err := newBenchEnv(ctx, *dir, 2)
	if err != nil {
		return err
	}
	defer env.Close()

	type sample struct {
		start   time.Time
		latency time.Duration
		gateway string
		status  string
	}
	var mu sync.Mutex
	var samples []sample
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var errs int
	var firstErr string
	for w := 0; w < *conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("%d-%d-%d", w, i, time.Now().UnixNano())
				status, out, err := env.post(ctx, "/v1/orders", "o"+key, map[string]any{"channel": "walk_in", "currency": "USD",
					"lines": []map[string]any{{"sku": "BENCH", "quantity": 1, "unit_amount": 500}}})
				if err != nil || status != 201 {
					mu.Lock()
					errs++
					if firstErr == "" {
						firstErr = fmt.Sprintf("create order: %d %s %v", status, out, err)
					}
					mu.Unlock()
					continue
				}
				var o struct{ ID string }
				json.Unmarshal(out, &o)
				t0 := time.Now()
				status, out, err = env.post(ctx, "/v1/orders/"+o.ID+"/payments", "p"+key, map[string]any{"method": "card", "amount": 500,
					"offline_behavior": "require_online",
					"card":             map[string]any{"pan": "4242424242424242", "exp_month": 12, "exp_year": 2030}})
				d := time.Since(t0)
				var p struct{ Gateway, Status string }
				json.Unmarshal(out, &p)
				mu.Lock()
				if err != nil || status != 201 {
					errs++
					if firstErr == "" {
						firstErr = fmt.Sprintf("pay: %d %s %v", status, out, err)
					}
				} else {
					samples = append(samples, sample{t0, d, p.Gateway, p.Status})
				}
				mu.Unlock()
			}
		}()
	}
	begin := time.Now()
	time.Sleep(*phase)
	outage := time.Now()
	env.sims[0].SetFaults("", faults)
	time.Sleep(*phase)
	duringState := env.app.Router.Statuses()[0]
	recovered := time.Now()
	env.sims[0].ClearFaults()
	time.Sleep(*phase)
	close(stop)
	wg.Wait()

	fmt.Fprintf(stdout, "payments during a primary outage (%s), %d terminals, phases of %s\n", *mode, *conc, *phase)
	fmt.Fprintf(stdout, "  %-8s %8s %10s %10s %10s %8s %8s %9s\n", "phase", "payments", "p50 ms", "p99 ms", "max ms", "bank-a", "bank-b", "declined")
	firstB := time.Duration(-1)
	firstBackToA := time.Duration(-1)
	for _, ph := range []struct {
		name     string
		from, to time.Time
	}{{"before", begin, outage}, {"during", outage, recovered}, {"after", recovered, time.Now()}} {
		var lat []time.Duration
		n := map[string]int{}
		for _, s := range samples {
			if s.start.Before(ph.from) || !s.start.Before(ph.to) {
				continue
			}
			lat = append(lat, s.latency)
			if s.status == "declined" {
				n["declined"]++
			} else {
				n[s.gateway]++
			}
		}
		slices.Sort(lat)
		pct := func(p float64) float64 {
			if len(lat) == 0 {
				return 0
			}
			return ms(lat[min(len(lat)-1, int(float64(len(lat))*p/100))])
		}
		fmt.Fprintf(stdout, "  %-8s %8d %10.2f %10.2f %10.2f %8d %8d %9d\n", ph.name, len(lat), pct(50), pct(99), pct(100), n["bank-a"], n["bank-b"], n["declined"])
	}
	for _, s := range samples {
		end := s.start.Add(s.latency)
		if s.gateway == "bank-b" && s.status == "captured" && end.After(outage) && (firstB < 0 || end.Sub(outage) < firstB) {
			firstB = end.Sub(outage)
		}
		if s.gateway == "bank-a" && s.status == "captured" && s.start.After(recovered) && (firstBackToA < 0 || end.Sub(recovered) < firstBackToA) {
			firstBackToA = end.Sub(recovered)
		}
	}
	fmt.Fprintf(stdout, "  outage → first payment served by bank-b:   %s\n", firstB.Round(time.Millisecond))
	fmt.Fprintf(stdout, "  recovery → first payment back on bank-a:   %s\n", firstBackToA.Round(time.Millisecond))
	fmt.Fprintf(stdout, "  bank-a at the end of the outage: state %s, %d consecutive failures\n", duringState.State, duringState.ConsecutiveFailures)
	fmt.Fprintf(stdout, "  request errors: %d %s\n", errs, firstErr)
	return nil
}
