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
)

func init() { benches["failover"] = benchFailover }

// benchFailover measures payments before, during and after an outage of
// the primary bank, with the secondary healthy: latency per phase and the
// time from the outage to the first payment the secondary serves.
func benchFailover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("failover", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	conc := fs.Int("c", 8, "concurrent terminals")
	phase := fs.Duration("phase", 5*time.Second, "length of each phase (before, during, after)")
	mode := fs.String("outage", "refuse", "how the primary fails: refuse (connections refused) or blackhole (accepts, never answers)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var faults map[string]any
	switch *mode {
	case "refuse":
		faults = map[string]any{"refuse": true}
	case "blackhole":
		faults = map[string]any{"blackhole": map[string]any{}}
	default:
		return usagef("failover: -outage %q: use refuse or blackhole", *mode)
	}
	if *conc <= 0 || *phase <= 0 || *phase > time.Hour {
		return usagef("failover: -c must be positive and -phase between 0 and 1h")
	}
	e, err := newEnv(ctx, c, stderr, []bankSpec{jsonBank(), jsonBank()}, nil)
	if err != nil {
		return err
	}
	defer e.close(stderr)
	s := e.store

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
	fail := func(msg string) {
		mu.Lock()
		errs++
		if firstErr == "" {
			firstErr = msg
		}
		mu.Unlock()
	}
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
				status, out, err := s.post(ctx, "/v1/orders", "o"+key, map[string]any{"channel": "walk_in", "currency": "USD",
					"lines": []map[string]any{{"sku": "BENCH", "quantity": 1, "unit_amount": 500}}})
				if err != nil || status != 201 {
					fail(fmt.Sprintf("create order: %d %s %v", status, out, err))
					continue
				}
				var o struct{ ID string }
				json.Unmarshal(out, &o)
				body := cardBody(500, "4242424242424242")
				body["offline_behavior"] = "require_online"
				t0 := time.Now()
				status, out, err = s.post(ctx, "/v1/orders/"+o.ID+"/payments", "p"+key, body)
				d := time.Since(t0)
				if err != nil || status != 201 {
					fail(fmt.Sprintf("pay: %d %s %v", status, out, err))
					continue
				}
				var p struct{ Gateway, Status string }
				json.Unmarshal(out, &p)
				mu.Lock()
				samples = append(samples, sample{t0, d, p.Gateway, p.Status})
				mu.Unlock()
			}
		}()
	}
	begin := time.Now()
	time.Sleep(*phase)
	outage := time.Now()
	if err := e.banks[0].setFaults(faults); err != nil {
		close(stop)
		wg.Wait()
		return err
	}
	time.Sleep(*phase)
	during, gwErr := s.gateways(ctx)
	recovered := time.Now()
	if err := e.banks[0].clearFaults(); err != nil {
		close(stop)
		wg.Wait()
		return err
	}
	time.Sleep(*phase)
	close(stop)
	wg.Wait()

	fmt.Fprintf(stdout, "payments during a primary outage (%s), %d terminals, phases of %s\n", *mode, *conc, *phase)
	fmt.Fprintf(stdout, "  %-8s %8s %10s %10s %10s %8s %8s %9s\n", "phase", "payments", "p50 ms", "p99 ms", "max ms", "bank-a", "bank-b", "declined")
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
		fmt.Fprintf(stdout, "  %-8s %8d %10.2f %10.2f %10.2f %8d %8d %9d\n", ph.name, len(lat),
			ms(percentile(lat, 50)), ms(percentile(lat, 99)), ms(percentile(lat, 100)), n["bank-a"], n["bank-b"], n["declined"])
	}
	firstB, firstBackToA := time.Duration(-1), time.Duration(-1)
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
	if gwErr == nil && len(during) > 0 {
		fmt.Fprintf(stdout, "  bank-a at the end of the outage: state %s, %d consecutive failures\n", during[0].State, during[0].ConsecutiveFailures)
	} else {
		fmt.Fprintf(stdout, "  bank-a at the end of the outage: not read (%v)\n", gwErr)
	}
	fmt.Fprintf(stdout, "  request errors: %d %s\n", errs, firstErr)
	return nil
}
