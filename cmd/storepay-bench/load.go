package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"storepay/gateway"
	"storepay/migrations"
)

// loadResult holds the latencies of one load run.
type loadResult struct {
	latencies []time.Duration
	elapsed   time.Duration
	cpu       time.Duration // CPU time of the serving process over elapsed; 0 if not measured
	errors    int
	firstErr  string
	statuses  map[string]int
}

func (r loadResult) rate() float64 { return float64(len(r.latencies)) / r.elapsed.Seconds() }

// cpuPer is the serving process's CPU time per request, and how many of
// the machine's cores it kept busy on average.
func (r loadResult) cpuPer(n int) (per time.Duration, cores float64) {
	if n == 0 || r.elapsed <= 0 {
		return 0, 0
	}
	return r.cpu / time.Duration(n), float64(r.cpu) / float64(r.elapsed)
}

func (r loadResult) percentile(p float64) time.Duration { return percentile(r.latencies, p) }

func percentile(lat []time.Duration, p float64) time.Duration {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p/100))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// cpuSince returns a function that reports the CPU time process pid used
// since cpuSince was called (0 where it is not measured).
func cpuSince(pid int) func() time.Duration {
	c0, ok0 := processCPU(pid)
	return func() time.Duration {
		c1, ok1 := processCPU(pid)
		if !ok0 || !ok1 {
			return 0
		}
		return c1 - c0
	}
}

// createOrders makes n orders of one line each, amount(i)+100, from conc
// terminals, and returns their ids.
func (s *store) createOrders(ctx context.Context, prefix string, n, conc int, amount func(i int) int) ([]string, error) {
	ids := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				status, out, err := s.post(ctx, "/v1/orders", fmt.Sprintf("%so-%d", prefix, i), map[string]any{"channel": "walk_in", "currency": "USD",
					"lines": []map[string]any{{"sku": "BENCH", "quantity": 1, "unit_amount": amount(i) + 100}}})
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
				ids[i] = o.ID
			}
		}()
	}
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return ids, firstErr
}

// load makes n payments from conc concurrent terminals, each on an order
// of its own made beforehand, and times only the payment requests.
func (s *store) load(ctx context.Context, prefix string, n, conc int, body func(i int) map[string]any) (loadResult, error) {
	return s.loadEach(ctx, prefix, n, conc, body, nil)
}

// loadEach is load, calling each (one call at a time) with the body of
// every payment answered 201, in the order the answers came.
func (s *store) loadEach(ctx context.Context, prefix string, n, conc int, body func(i int) map[string]any, each func(out []byte)) (loadResult, error) {
	orders, err := s.createOrders(ctx, prefix, n, conc, func(i int) int { return body(i)["amount"].(int) })
	if err != nil {
		return loadResult{}, err
	}
	res := loadResult{latencies: make([]time.Duration, 0, n), statuses: map[string]int{}}
	var next atomic.Int64
	var wg sync.WaitGroup
	var mu sync.Mutex
	cpu := cpuSince(s.proc.pid())
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
				t0 := time.Now()
				status, out, err := s.post(ctx, "/v1/orders/"+orders[i]+"/payments", fmt.Sprintf("%sp-%d", prefix, i), body(i))
				d := time.Since(t0)
				var p struct{ Status string }
				json.Unmarshal(out, &p)
				mu.Lock()
				if err != nil || status != 201 {
					res.errors++
					if res.firstErr == "" {
						res.firstErr = fmt.Sprintf("%d %s %v", status, out, err)
					}
				} else {
					res.latencies = append(res.latencies, d)
					res.statuses[p.Status]++
					if each != nil {
						each(out)
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	res.elapsed, res.cpu = time.Since(start), cpu()
	return res, ctx.Err()
}

// cardBody is a card sale of amount on a test card.
func cardBody(amount int, pan string) map[string]any {
	return map[string]any{"method": "card", "amount": amount, "capture": true,
		"card": map[string]any{"pan": pan, "exp_month": 12, "exp_year": 2030}}
}

// benchPAN returns a Luhn-valid test card number that differs by i, so
// that per-card velocity limits are not what is measured.
func benchPAN(i int) string {
	return gateway.WithCheckDigit(fmt.Sprintf("45%013d", i%1_000_000_000)) // 45…: clear of the banks' test cards
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

// databaseSize is the size of the SQLite database at path with its WAL.
func databaseSize(path string) (int64, error) {
	var total int64
	for _, suffix := range []string{"", "-wal"} {
		fi, err := os.Stat(path + suffix)
		if err != nil && !os.IsNotExist(err) {
			return 0, err
		}
		if err == nil {
			total += fi.Size()
		}
	}
	return total, nil
}
