package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"storepay/gateway/banksim"
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
		c.Offline.FloorLimit, c.Offline.VelocityCount, c.Offline.VelocityAmount = 1<<40, 1<<30, 1<<50
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
	res, err := env.load(ctx, *n, *conc, func(i int) map[string]any {
		return map[string]any{"method": "card", "amount": 100 + i%5000, "capture": true,
			"card": map[string]any{"pan": benchPAN(i), "exp_month": 12, "exp_year": 2030}}
	})
	if err != nil {
		return err
	}
	ws := env.app.DB.WriterStats()
	rawAfter, err := rawCommitRate(env.dir, 2*time.Second)
	if err != nil {
		return err
	}
	raw := (rawBefore + rawAfter) / 2
	fmt.Fprintf(stdout, "offline acceptance, every bank down, %d payments from %d concurrent terminals\n", *n, *conc)
	fmt.Fprintf(stdout, "  stored payments/s (durable, acknowledged)   %8.0f\n", res.rate())
	fmt.Fprintf(stdout, "  latency p50 / p99                           %8.2f / %.2f ms\n", ms(res.percentile(50)), ms(res.percentile(99)))
	fmt.Fprintf(stdout, "  outcomes                                    %v, errors %d\n", res.statuses, res.errors)
	fmt.Fprintf(stdout, "  raw SQLite single-row commits/s (before %.0f, after %.0f), mean %8.0f\n", rawBefore, rawAfter, raw)
	fmt.Fprintf(stdout, "  ratio stored/raw                            %8.2f\n", res.rate()/raw)
	fmt.Fprintf(stdout, "  writer: %d commits, %.1f writes each, %.0f µs running writes and %.0f µs committing per commit\n",
		ws.Batches, float64(ws.Writes)/float64(max(ws.Batches, 1)), float64(ws.ExecTime.Microseconds())/float64(max(ws.Batches, 1)),
		float64(ws.CommitTime.Microseconds())/float64(max(ws.Batches, 1)))
	return nil
}

// benchPAN returns a Luhn-valid test card number that differs by i, so
// that per-card velocity limits are not what is measured.
func benchPAN(i int) string {
	base := fmt.Sprintf("4%014d", i%1_000_000_000)
	sum := 0
	for j := 0; j < len(base); j++ {
		d := int(base[len(base)-1-j] - '0')
		if j%2 == 0 {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return base + fmt.Sprint((10-sum%10)%10)
}
