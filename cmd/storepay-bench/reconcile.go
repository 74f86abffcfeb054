package main

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"syscall"
	"time"

	"storepay/migrations"
	"storepay/reconcile"
)

func init() {
	benches["reconcile"] = benchReconcile
	hidden["reconcile-child"] = reconcileChild
}

// benchDate is the business date the reconciliation bench books on.
const benchDate = "2026-11-21"

// benchReconcile measures the nightly reconciliation at scale: n ledger
// rows (card captures in a fresh SQLite database made by storepay's own
// migrations) against an n-row settlement report, beside the naive
// approach in the same run: the stock sqlite3 shell importing the same CSV
// into a table and joining it on the reference.
//
// Each side runs as a child process, so that its peak memory is the child's
// maximum resident set size as the kernel counts it (getrusage ru_maxrss):
// storepay-bench re-executes itself (reconcile-child) to run package
// reconcile as the nightly command does, sqlite3 is the
// shell. Both read the same files on the same disk, one after the other,
// each after a sync(2): neither pays for the writeback of what was written
// before it (the generated files, the other side's database).
func benchReconcile(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("reconcile", flag.ContinueOnError)
	fs.SetOutput(stderr)
	n := fs.Int("n", 1_000_000, "ledger rows, and settlement rows")
	dir := fs.String("dir", "", "`folder` on the disk to use (default: the system's temp folder)")
	sqlite := fs.String("sqlite3", "sqlite3", "the sqlite3 shell to compare with")
	keep := fs.Bool("keep", false, "keep the generated files")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *n <= 0 {
		return usagef("reconcile: -n must be positive")
	}
	shell, err := exec.LookPath(*sqlite)
	if err != nil {
		return usagef("reconcile: the sqlite3 shell is needed for the comparison (%v); install it with: apt-get install sqlite3", err)
	}
	work, err := os.MkdirTemp(*dir, "storepay-bench-reconcile-")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Fprintln(stderr, "files kept in", work)
	} else {
		defer os.RemoveAll(work)
	}
	dbPath, csvPath := filepath.Join(work, "storepay.db"), filepath.Join(work, "settlement.csv")

	fmt.Fprintf(stderr, "generating %d ledger rows and a %d-row settlement report in %s ...\n", *n, *n, work)
	t0 := time.Now()
	want, err := generateReconcileBench(ctx, dbPath, csvPath, *n)
	if err != nil {
		return fmt.Errorf("bench reconcile: generate: %w", err)
	}
	csvInfo, _ := os.Stat(csvPath)
	fmt.Fprintf(stderr, "generated in %s\n", time.Since(t0).Round(time.Millisecond))

	self, err := os.Executable()
	if err != nil {
		return err
	}
	syscall.Sync()
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, self, "reconcile-child", dbPath, csvPath)
	cmd.Stdout, cmd.Stderr = &out, stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("bench reconcile: storepay child: %w", err)
	}
	spWall := time.Since(start)
	spRSS := maxRSS(cmd.ProcessState)
	var got childFigures
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		return fmt.Errorf("bench reconcile: storepay child answered %q: %w", out.String(), err)
	}
	if got.Matched != want.matched || got.Discrepancies != want.discrepancies {
		return fmt.Errorf("bench reconcile: storepay found %d matched and %d discrepancies, the generator made %d and %d",
			got.Matched, got.Discrepancies, want.matched, want.discrepancies)
	}

	syscall.Sync()
	naive, err := naiveSQLite(ctx, shell, work, dbPath, csvPath)
	if err != nil {
		return fmt.Errorf("bench reconcile: sqlite3: %w", err)
	}
	if naive.matched != want.matched {
		return fmt.Errorf("bench reconcile: the sqlite3 join found %d matched, want %d", naive.matched, want.matched)
	}

	fmt.Fprintf(stdout, "reconciliation of %d ledger rows against a %d-row settlement report (%.0f MB), %d cores, %s\n",
		*n, *n, float64(csvInfo.Size())/1e6, runtime.NumCPU(), time.Now().UTC().Format(time.DateOnly))
	fmt.Fprintf(stdout, "  %d matched, %d discrepancies (%d missing at bank, %d missing in store, %d amount mismatches)\n",
		want.matched, want.discrepancies, want.missingAtBank, want.missingInStore, want.amountMismatch)
	fmt.Fprintln(stdout, "storepay (child process; peak memory = its max RSS):")
	fmt.Fprintf(stdout, "  load ledger + stream report + classify   %8.2f s\n", got.Reconcile.Seconds())
	fmt.Fprintf(stdout, "  record the run (%d items, SQLite)   %8.2f s\n", got.Matched+got.Discrepancies, got.Save.Seconds())
	fmt.Fprintf(stdout, "  write JSON report + CSV                  %8.2f s\n", got.Write.Seconds())
	fmt.Fprintf(stdout, "  whole process                            %8.2f s   peak RSS %6.0f MB   peak Go heap %6.0f MB\n",
		spWall.Seconds(), spRSS, float64(got.PeakHeap)/1e6)
	fmt.Fprintln(stdout, "sqlite3 shell, naive (import the CSV into a table, join on the reference):")
	naiveTotal := naive.importTime + naive.join
	fmt.Fprintf(stdout, "  .import (process)                        %8.2f s\n", naive.importTime.Seconds())
	fmt.Fprintf(stdout, "  join both ways + classify (process)      %8.2f s\n", naive.join.Seconds())
	fmt.Fprintf(stdout, "  total                                    %8.2f s   peak RSS %6.0f MB\n", naiveTotal.Seconds(), naive.rss)
	fmt.Fprintf(stdout, "sqlite3 import+join takes %.2fx storepay's reconcile; %.2fx storepay's whole process, recording the run and writing its reports included\n",
		naiveTotal.Seconds()/got.Reconcile.Seconds(), naiveTotal.Seconds()/spWall.Seconds())
	fmt.Fprintf(stdout, "goals: storepay peak RSS %.0f MB (bound ≤ 100 MB); sqlite3 / storepay reconcile %.2fx (bound ≥ 3.00x)\n",
		spRSS, naiveTotal.Seconds()/got.Reconcile.Seconds())
	return nil
}

// childFigures is what the storepay child prints.
type childFigures struct {
	Reconcile     time.Duration `json:"reconcile"`
	Save          time.Duration `json:"save"`
	Write         time.Duration `json:"write"`
	PeakHeap      uint64        `json:"peak_heap"`
	Matched       int           `json:"matched"`
	Discrepancies int           `json:"discrepancies"`
}

// reconcileChild runs the reconciliation the way the nightly command
// does (load, match, save, write the reports) and prints its figures.
func reconcileChild(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) != 2 {
		return usagef("reconcile-child: want the database and the report")
	}
	dbPath, csvPath := args[0], args[1]
	defer leanGC()()
	stop := sampleHeap()
	db, err := migrations.Open(ctx, dbPath)
	if err != nil {
		return err
	}
	defer db.Close()
	var f childFigures
	t0 := time.Now()
	res, err := reconcile.Reconcile(ctx, db, reconcile.Input{Date: benchDate,
		Sources: []reconcile.Source{reconcile.FileSource("bank-a", "bench", csvPath)}})
	if err != nil {
		return err
	}
	f.Reconcile = time.Since(t0)
	t0 = time.Now()
	if err := reconcile.Save(ctx, db, res); err != nil {
		return err
	}
	f.Save = time.Since(t0)
	t0 = time.Now()
	dir := filepath.Dir(dbPath)
	if err := writeFileAtomic(filepath.Join(dir, "report.json"), res.WriteJSON); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, "discrepancies.csv"), res.WriteCSV); err != nil {
		return err
	}
	f.Write = time.Since(t0)
	f.PeakHeap = stop()
	f.Matched = res.Summary.Categories[reconcile.Matched].Count
	f.Discrepancies = res.Summary.Discrepancies
	return json.NewEncoder(stdout).Encode(f)
}

// sampleHeap samples the Go heap every 10ms until the returned function
// is called, which returns the largest value seen.
func sampleHeap() func() uint64 {
	done := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var max uint64
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(s)
			if v := s[0].Value.Uint64(); v > max {
				max = v
			}
			select {
			case <-done:
				peak <- max
				return
			case <-t.C:
			}
		}
	}()
	return func() uint64 { close(done); return <-peak }
}

// maxRSS is a finished child's peak resident set size in MB.
func maxRSS(ps *os.ProcessState) float64 {
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
		return float64(ru.Maxrss) * 1024 / 1e6 // Linux counts kilobytes
	}
	return 0
}

type benchWant struct {
	matched, discrepancies                        int
	missingAtBank, missingInStore, amountMismatch int
}

// generateReconcileBench writes n card captures of benchDate into a fresh
// database and the bank's report of them to csvPath, in another order
// (a bank sorts by its own booking time), with a few discrepancies: every
// 1000th capture is missing from the report and replaced by a row the
// store never made, every 997th row is off by one cent.
func generateReconcileBench(ctx context.Context, dbPath, csvPath string, n int) (benchWant, error) {
	var want benchWant
	db, err := migrations.Open(ctx, dbPath)
	if err != nil {
		return want, err
	}
	defer db.Close()
	day, _ := time.Parse(time.DateOnly, benchDate)
	// Ids shaped like storepay's and the bank's: 32 and 16 hex digits.
	id := func(prefix string, i int) string {
		return fmt.Sprintf("%s%016x%016x", prefix, uint64(i)*0x9E3779B97F4A7C15, uint64(i)^0xBF58476D1CE4E5B9)
	}
	psp := func(i int) string { return fmt.Sprintf("auth_%016x", uint64(i)*0x94D049BB133111EB) }
	amount := func(i int) int64 { return int64(100 + (i*7919)%50000) }
	err = db.Update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO orders (id, status, channel, currency, lines, total_amount, terminal_id, created_at, updated_at)
			VALUES ('ord_bench', 'paid', 'walk_in', 'USD', '[]', 0, 'bench', ?, ?)`, migrations.FormatTime(day), migrations.FormatTime(day))
		return err
	})
	if err != nil {
		return want, err
	}
	const chunk = 20000
	for start := 0; start < n; start += chunk {
		end := min(start+chunk, n)
		err := db.Update(ctx, func(tx *sql.Tx) error {
			stmt, err := tx.Prepare(`INSERT INTO payments (id, order_id, method, status, mode, gateway, amount, authorized_amount,
				captured_amount, captured_at, currency, capture, auth_code, bank_auth_id, card_last4, terminal_id, created_at, updated_at)
				VALUES (?, 'ord_bench', 'card', 'captured', 'online', 'bank-a', ?, ?, ?, ?, 'USD', 1, 'A1B2C3', ?, '4242', 'bench', ?, ?)`)
			if err != nil {
				return err
			}
			defer stmt.Close()
			for i := start; i < end; i++ {
				at := migrations.FormatTime(spread(day, i, n))
				a := amount(i)
				if _, err := stmt.Exec(id("pay_", i), a, a, a, at, psp(i), at, at); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return want, err
		}
	}

	f, err := os.Create(csvPath)
	if err != nil {
		return want, err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString("batch_number,merchant_id,psp_reference,merchant_reference,type,booking_date,currency,gross_amount,fee_amount,net_amount,card_last4,auth_code\n")
	// A stride coprime with n visits every row once, out of ledger order.
	stride := 7919
	for gcd(stride, n) != 1 {
		stride++
	}
	var line []byte
	for k := 0; k < n; k++ {
		i := (k * stride) % n
		ref, auth, gross := id("pay_", i), psp(i), amount(i)
		switch {
		case i%1000 == 999:
			ref, auth = id("pay_", n+i), psp(n+i)
			want.missingAtBank++
			want.missingInStore++
		case i%997 == 996:
			gross++
			want.amountMismatch++
		default:
			want.matched++
		}
		fee := -((gross*29+500)/1000 + 30)
		line = append(line[:0], "20261121-01,bench,"...)
		line = append(line, auth...)
		line = append(line, ',')
		line = append(line, ref...)
		line = append(line, ",Settled,"...)
		line = spread(day, k, n).AppendFormat(line, time.RFC3339)
		line = append(line, ",USD,"...)
		line = strconv.AppendInt(line, gross, 10)
		line = append(line, ',')
		line = strconv.AppendInt(line, fee, 10)
		line = append(line, ',')
		line = strconv.AppendInt(line, gross+fee, 10)
		line = append(line, ",4242,A1B2C3\n"...)
		w.Write(line)
	}
	want.discrepancies = want.missingAtBank + want.missingInStore + want.amountMismatch
	if err := w.Flush(); err != nil {
		return want, err
	}
	return want, f.Close()
}

// spread is the i-th of n moments evenly over the day.
func spread(day time.Time, i, n int) time.Time {
	return day.Add(time.Duration(float64(24*time.Hour) * float64(i) / float64(n)))
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

type naiveFigures struct {
	importTime, join time.Duration
	rss              float64
	matched          int
}

// naiveSQLite is the approach storepay is measured against: the sqlite3
// shell imports the report into a table of a fresh database (one
// process), then attaches the ledger read-only, indexes the imported
// references and joins both ways on them: rows the store has not,
// captures the bank has not, amounts that differ (a second process).
// Without that index the second direction is quadratic (SQLite builds no
// automatic index for it: 100,000 rows took 12 minutes), which would make
// the comparison meaningless. Each process is timed from start to exit;
// the peak memory is the larger of the two.
func naiveSQLite(ctx context.Context, shell, work, dbPath, csvPath string) (naiveFigures, error) {
	var f naiveFigures
	naive := filepath.Join(work, "naive.db")
	shellRun := func(script string) (string, time.Duration, float64, error) {
		cmd := exec.CommandContext(ctx, shell, "-batch", "-bail", naive)
		cmd.Stdin = strings.NewReader(script)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		if err := cmd.Run(); err != nil {
			return "", 0, 0, fmt.Errorf("%w: %s", err, out.String())
		}
		return out.String(), time.Since(start), maxRSS(cmd.ProcessState), nil
	}
	_, d, rss, err := shellRun(fmt.Sprintf(".import --csv %s settlement\n", csvPath))
	if err != nil {
		return f, fmt.Errorf("import: %w", err)
	}
	f.importTime, f.rss = d, rss
	syscall.Sync()
	out, d, rss, err := shellRun(fmt.Sprintf(`ATTACH 'file:%s?mode=ro' AS ledger;
CREATE INDEX settlement_reference ON settlement (merchant_reference);
SELECT CASE WHEN p.id IS NULL THEN 'missing_in_store'
            WHEN p.captured_amount = CAST(s.gross_amount AS INTEGER) AND p.currency = s.currency THEN 'matched'
            ELSE 'amount_mismatch' END AS category, count(*)
  FROM settlement s LEFT JOIN ledger.payments p ON p.id = s.merchant_reference
  WHERE s.type = 'Settled' GROUP BY 1 ORDER BY 1;
SELECT 'missing_at_bank', count(*) FROM ledger.payments p
  WHERE p.method = 'card' AND p.captured_at >= '%s' AND p.captured_at < '%sT99'
    AND NOT EXISTS (SELECT 1 FROM settlement s WHERE s.merchant_reference = p.id);
`, dbPath, benchDate, benchDate))
	if err != nil {
		return f, fmt.Errorf("join: %w", err)
	}
	f.join, f.rss = d, max(f.rss, rss)
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "matched|"); ok {
			f.matched, _ = strconv.Atoi(v)
		}
	}
	return f, nil
}

// leanGC lowers the garbage collector's target as `storepay reconcile`
// does (unless GOGC is set) and returns the function that restores it.
func leanGC() (restore func()) {
	if os.Getenv("GOGC") != "" {
		return func() {}
	}
	old := debug.SetGCPercent(25)
	return func() { debug.SetGCPercent(old) }
}

// writeFileAtomic writes a report next to its final path, fsyncs it and
// renames it into place, as `storepay reconcile` does.
func writeFileAtomic(path string, write func(io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
