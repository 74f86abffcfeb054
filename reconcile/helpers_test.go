package reconcile_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"storepay/migrations"
	"storepay/reconcile"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func mustOpen(tb testing.TB) *migrations.DB {
	tb.Helper()
	db, err := migrations.Open(context.Background(), filepath.Join(tb.TempDir(), "storepay.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

// payment is a store payment as a fixture writes it. Times are RFC 3339.
type payment struct {
	ID             string `json:"id"`
	Method         string `json:"method"`
	Status         string `json:"status"`
	Gateway        string `json:"gateway"`
	Amount         int64  `json:"amount"`
	TipAmount      int64  `json:"tip_amount"`
	CapturedAmount int64  `json:"captured_amount"`
	CapturedAt     string `json:"captured_at"`
	Currency       string `json:"currency"`
	BankAuthID     string `json:"bank_auth_id"`
	CardLast4      string `json:"card_last4"`
	AuthCode       string `json:"auth_code"`
	CreatedAt      string `json:"created_at"`
	// DeclinedAt writes the payment_events row of a decline after forward.
	DeclinedAt string `json:"declined_at"`
	// SAF writes a saf_records row with this status.
	SAF string `json:"saf"`
}

type refund struct {
	ID           string `json:"id"`
	PaymentID    string `json:"payment_id"`
	Amount       int64  `json:"amount"`
	Status       string `json:"status"`
	BankRefundID string `json:"bank_refund_id"`
	CreatedAt    string `json:"created_at"`
	UpdatedAt    string `json:"updated_at"`
}

// fixture is a store's ledger plus the nights to reconcile, read from
// testdata/settlements/<case>/ledger.json. Each night's reports are the
// files <date>/<gateway>.csv next to it.
type fixture struct {
	Banks    map[string]string `json:"banks"` // gateway → merchant id
	Runs     []string          `json:"runs"`
	Payments []payment         `json:"payments"`
	Refunds  []refund          `json:"refunds"`
}

func ts(tb testing.TB, s string) string {
	tb.Helper()
	if s == "" {
		return ""
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		tb.Fatalf("fixture time %q: %v", s, err)
	}
	return migrations.FormatTime(t)
}

// seed writes payments and refunds straight into the tables, the way the
// orders package leaves them.
func seed(tb testing.TB, db *migrations.DB, payments []payment, refunds []refund) {
	tb.Helper()
	err := db.Update(context.Background(), func(tx *sql.Tx) error {
		if _, err := tx.Exec(`INSERT OR IGNORE INTO orders (id, status, channel, currency, lines, total_amount, terminal_id, created_at, updated_at)
			VALUES ('ord_fixture', 'paid', 'walk_in', 'USD', '[]', 0, 'lane-3', '2026-11-01T00:00:00.000000000Z', '2026-11-01T00:00:00.000000000Z')`); err != nil {
			return err
		}
		for _, p := range payments {
			if p.Method == "" {
				p.Method = "card"
			}
			mode := "online"
			if p.Status == "stored" || p.Status == "declined_after_forward" {
				mode = "offline"
			}
			created := ts(tb, p.CreatedAt)
			if created == "" {
				created = ts(tb, p.CapturedAt)
			}
			updated := created
			if p.DeclinedAt != "" {
				updated = ts(tb, p.DeclinedAt)
			}
			if _, err := tx.Exec(`INSERT INTO payments (id, order_id, method, status, mode, gateway, amount, tip_amount,
				authorized_amount, captured_amount, captured_at, currency, capture, auth_code, bank_auth_id, card_last4,
				terminal_id, created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,1,?,?,?,'lane-3',?,?)`,
				p.ID, "ord_fixture", p.Method, p.Status, mode, p.Gateway, p.Amount, p.TipAmount, p.CapturedAmount,
				p.CapturedAmount, ts(tb, p.CapturedAt), p.Currency, p.AuthCode, p.BankAuthID, p.CardLast4, created, updated); err != nil {
				return fmt.Errorf("payment %s: %w", p.ID, err)
			}
			if p.DeclinedAt != "" {
				if _, err := tx.Exec(`INSERT INTO payment_events (payment_id, from_status, to_status, detail, at)
					VALUES (?, 'stored', 'declined_after_forward', 'forward', ?)`, p.ID, updated); err != nil {
					return err
				}
			}
			if p.SAF != "" {
				if err := insertSAF(tx, p.ID, p.SAF, created); err != nil {
					return fmt.Errorf("saf record of %s: %w", p.ID, err)
				}
			}
		}
		for _, r := range refunds {
			if r.UpdatedAt == "" {
				r.UpdatedAt = r.CreatedAt
			}
			if _, err := tx.Exec(`INSERT INTO refunds (id, payment_id, amount, status, bank_refund_id, created_at, updated_at)
				VALUES (?,?,?,?,?,?,?)`, r.ID, r.PaymentID, r.Amount, r.Status, r.BankRefundID, ts(tb, r.CreatedAt), ts(tb, r.UpdatedAt)); err != nil {
				return fmt.Errorf("refund %s: %w", r.ID, err)
			}
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

// insertSAF writes a store-and-forward record whatever that table looks
// like today: reconciliation reads only payment_id and status from it, and
// store-and-forward owns the rest. Without the table (store-and-forward
// not built yet) it creates the two columns reconciliation reads.
func insertSAF(tx *sql.Tx, paymentID, status, at string) error {
	var n int
	if err := tx.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'saf_records'`).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		if _, err := tx.Exec(`CREATE TABLE saf_records (payment_id TEXT PRIMARY KEY, status TEXT NOT NULL)`); err != nil {
			return err
		}
	}
	rows, err := tx.Query(`SELECT name, type, "notnull", dflt_value FROM pragma_table_info('saf_records')`)
	if err != nil {
		return err
	}
	var cols []string
	var vals []any
	for rows.Next() {
		var name, typ string
		var notNull bool
		var dflt sql.NullString
		if err := rows.Scan(&name, &typ, &notNull, &dflt); err != nil {
			rows.Close()
			return err
		}
		var v any
		switch {
		case name == "payment_id":
			v = paymentID
		case name == "status":
			v = status
		case name == "id":
			v = "saf_" + paymentID
		case !notNull || dflt.Valid:
			continue
		case strings.Contains(strings.ToUpper(typ), "INT"):
			v = 0
		case strings.HasSuffix(name, "_at"):
			v = at
		default:
			v = "x"
		}
		cols = append(cols, `"`+name+`"`)
		vals = append(vals, v)
	}
	rows.Close()
	_, err = tx.Exec(`INSERT INTO saf_records (`+strings.Join(cols, ",")+`) VALUES (`+strings.TrimSuffix(strings.Repeat("?,", len(cols)), ",")+`)`, vals...)
	return err
}

// loadFixture opens a fresh database seeded with the case's ledger.
func loadFixture(tb testing.TB, name string) (*migrations.DB, fixture, string) {
	tb.Helper()
	dir := filepath.Join("..", "testdata", "settlements", name)
	b, err := os.ReadFile(filepath.Join(dir, "ledger.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var f fixture
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		tb.Fatalf("%s/ledger.json: %v", dir, err)
	}
	db := mustOpen(tb)
	seed(tb, db, f.Payments, f.Refunds)
	return db, f, dir
}

// sources are the reports of one night of a fixture, bank by bank.
func (f fixture) sources(t *testing.T, dir, date string) []reconcile.Source {
	t.Helper()
	var out []reconcile.Source
	for _, gw := range slices.Sorted(maps.Keys(f.Banks)) {
		path := filepath.Join(dir, date, gw+".csv")
		if _, err := os.Stat(path); err != nil {
			t.Fatalf("night %s: %v", date, err)
		}
		out = append(out, reconcile.FileSource(gw, f.Banks[gw], path))
	}
	return out
}

// clock is a fixed time, so that golden reports do not change.
func clock(s string) func() time.Time {
	t, _ := time.Parse(time.RFC3339, s)
	return func() time.Time { return t }
}

// run reconciles and saves one night.
func run(t *testing.T, db *migrations.DB, date string, sources []reconcile.Source) *reconcile.Result {
	t.Helper()
	res, err := reconcile.Reconcile(context.Background(), db, reconcile.Input{Date: date, Sources: sources,
		Now: clock(date + "T02:30:00Z")})
	if err != nil {
		t.Fatalf("reconcile %s: %v", date, err)
	}
	if err := reconcile.Save(context.Background(), db, res); err != nil {
		t.Fatalf("save %s: %v", date, err)
	}
	return res
}

// golden compares got with the golden file, or rewrites it with -update.
func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test ./reconcile -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (rerun with -update if the change is intended):\n%s", path, diff(string(want), string(got)))
	}
}

// diff shows the first lines that differ.
func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	shown := 0
	for i := 0; i < max(len(w), len(g)) && shown < 8; i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			fmt.Fprintf(&b, "line %d\n  want: %s\n  got:  %s\n", i+1, wl, gl)
			shown++
		}
	}
	return b.String()
}
