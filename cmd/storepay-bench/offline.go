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
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"storepay/migrations"
)

func init() {
	benches["offline"] = benchOffline
	hidden["floor-server"] = floorServer
}

// benchOffline measures offline acceptance with every bank down: how many
// payments per second storepay acknowledges durably (stored) and the CPU
// each costs the serve process, beside a floor in the same run: a bare
// net/http server storing one fsynced row per request, as a child process
// of its own under the same load.
func benchOffline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("offline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	n := fs.Int("n", 20000, "payments to make")
	conc := fs.Int("c", 64, "concurrent terminals")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *n <= 0 || *conc <= 0 {
		return usagef("offline: -n and -c must be positive")
	}
	refuse := []string{"-refuse"}
	e, err := newEnv(ctx, c, stderr, []bankSpec{{"acquirer-json", refuse}, {"acquirer-json", refuse}}, func(cfg map[string]any) {
		cfg["offline"].(map[string]any)["floor_limit"] = int64(1) << 40
		cfg["forwarding"] = map[string]any{"interval": "-1s"} // measure acceptance, not forwarding
	})
	if err != nil {
		return err
	}
	defer e.close(stderr)
	rawBefore, err := rawCommitRate(e.dir, 2*time.Second)
	if err != nil {
		return err
	}
	body := func(i int) map[string]any { return cardBody(100+i%5000, benchPAN(i)) }
	res, err := e.store.load(ctx, "", *n, *conc, body)
	if err != nil {
		return err
	}
	floor, err := floorRun(ctx, e.dir, *n, *conc, body)
	if err != nil {
		return err
	}
	rawAfter, err := rawCommitRate(e.dir, 2*time.Second)
	if err != nil {
		return err
	}
	raw := (rawBefore + rawAfter) / 2
	fmt.Fprintf(stdout, "offline acceptance, every bank down, %d payments from %d concurrent terminals\n", *n, *conc)
	fmt.Fprintf(stdout, "  stored payments/s (durable, acknowledged)   %8.0f\n", res.rate())
	fmt.Fprintf(stdout, "  latency p50 / p99                           %8.2f / %.2f ms\n", ms(res.percentile(50)), ms(res.percentile(99)))
	fmt.Fprintf(stdout, "  outcomes                                    %v, errors %d %s\n", res.statuses, res.errors, res.firstErr)
	fmt.Fprintf(stdout, "  raw SQLite single-row commits/s (before %.0f, after %.0f), mean %8.0f\n", rawBefore, rawAfter, raw)
	fmt.Fprintf(stdout, "  ratio stored/raw                            %8.2f\n", res.rate()/raw)
	floorRate := float64(*n) / floor.elapsed.Seconds()
	fmt.Fprintf(stdout, "  floor: bare net/http + one fsynced INSERT each   %8.0f/s (ratio to raw %.2f)\n", floorRate, floorRate/raw)
	if res.cpu > 0 && floor.cpu > 0 {
		per, cores := res.cpuPer(len(res.latencies))
		fper, fcores := floor.cpuPer(*n)
		fmt.Fprintf(stdout, "  CPU per request of the serving process (the load generator is another process)\n")
		fmt.Fprintf(stdout, "    storepay %6.0f µs on %.2f cores busy\n", float64(per.Microseconds()), cores)
		fmt.Fprintf(stdout, "    floor    %6.0f µs on %.2f cores busy\n", float64(fper.Microseconds()), fcores)
		fmt.Fprintf(stdout, "    storepay / floor %.2fx (bound ≤ 2.00x) on %d cores\n", float64(per)/float64(fper), runtime.NumCPU())
	}
	return nil
}

// floorRun starts the floor server as a child of this program and puts
// the same load on it: the yardstick for offline acceptance.
func floorRun(ctx context.Context, dir string, n, conc int, body func(i int) map[string]any) (loadResult, error) {
	self, err := os.Executable()
	if err != nil {
		return loadResult{}, err
	}
	p, stdout, err := startChild(dir, "floor", nil, self, "floor-server", "-db", filepath.Join(dir, "floor.db"))
	if err != nil {
		return loadResult{}, err
	}
	defer p.stop(10 * time.Second)
	var u string
	if err := readLines(p, stdout, 20*time.Second, func(line string) bool {
		u, _ = strings.CutPrefix(line, "floor listening on ")
		return u != ""
	}); err != nil {
		return loadResult{}, err
	}
	if err := loopback(u); err != nil {
		return loadResult{}, err
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	defer client.CloseIdleConnections()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	cpu := cpuSince(p.pid())
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
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, u+"/", bytes.NewReader(b))
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

// floorServer is the least a durable acceptor can do on this machine:
// net/http and JSON on loopback with one single-row INSERT per request
// through storepay's group-committing writer (WAL, synchronous=FULL),
// acknowledged once it is committed. What separates storepay from it is
// storepay's own work per payment.
func floorServer(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("floor-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("db", "", "database `file`")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	db, err := migrations.Open(ctx, *path)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.Update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`CREATE TABLE floor (id INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, amount INTEGER NOT NULL, last4 TEXT NOT NULL)`)
		return err
	}); err != nil {
		return err
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
		return err
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	fmt.Fprintf(stdout, "floor listening on http://%s\n", ln.Addr())
	<-ctx.Done()
	return srv.Close()
}
