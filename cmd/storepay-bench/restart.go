package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"storepay/migrations"
)

func init() { benches["restart"] = benchRestart }

// benchRestart measures how soon a store with a long history and a long
// queue is ready after a restart, and which queued payments the
// forwarder sends first.
//
// The queue is made through the API (payments forced offline while the
// emergency stop pauses forwarding), so every record is exactly what
// production writes; the history (captured online payments) is written
// straight into the database while serve is stopped, as the
// reconciliation bench does, because a million API payments would take
// the bench an hour. serve is then started again and timed from its
// start to the first 200 of /readyz; the emergency stop is lifted and the
// bank's ledger shows the order the advices arrived in.
func benchRestart(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("restart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c common
	c.register(fs)
	queued := fs.Int("queued", 100_000, "payments queued for forwarding (made through the API)")
	history := fs.Int("payments", 1_000_000, "captured payments of the history (written into the database)")
	first := fs.Int("first", 200, "forwarded advices whose order is checked")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *queued <= 0 || *history < 0 || *first <= 0 || *first > *queued {
		return usagef("restart: -queued and -first must be positive, -first at most -queued, -payments not negative")
	}
	const conc = 32
	e, err := newEnv(ctx, c, stderr, []bankSpec{jsonBank()}, func(cfg map[string]any) {
		cfg["offline"].(map[string]any)["floor_limit"] = int64(1) << 40
		// One forward at a time: the order the bank sees is the order
		// the forwarder chose.
		cfg["forwarding"] = map[string]any{"concurrency": 1}
	})
	if err != nil {
		return err
	}
	defer e.close(stderr)
	s := e.store
	if err := s.estop(ctx, "pause"); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "queueing %d payments through the API ...\n", *queued)
	t0 := time.Now()
	ids, res, err := s.payIDs(ctx, *queued, conc, func(i int) map[string]any {
		b := cardBody(100+i%5000, benchPAN(i))
		b["offline_behavior"] = "force_offline"
		return b
	})
	if err != nil {
		return err
	}
	if res.statuses["stored"] != *queued {
		return fmt.Errorf("restart: only %d of %d payments were stored (%v, %s)", res.statuses["stored"], *queued, res.statuses, res.firstErr)
	}
	fmt.Fprintf(stderr, "queued in %s; stopping serve, writing %d payments of history ...\n", time.Since(t0).Round(time.Second), *history)
	if err := s.close(); err != nil {
		return err
	}
	if err := writeHistory(ctx, s.dbPath, *history); err != nil {
		return fmt.Errorf("restart: history: %w", err)
	}
	info, err := databaseSize(s.dbPath)
	if err != nil {
		return err
	}
	ready, err := s.start(ctx)
	if err != nil {
		return err
	}
	readyAgain := ready
	// A second restart, with the page cache warm from the first: the
	// figure a store sees after a crash, rather than after a cold boot.
	if err := s.close(); err != nil {
		return err
	}
	if readyAgain, err = s.start(ctx); err != nil {
		return err
	}
	if err := s.estop(ctx, "go"); err != nil {
		return err
	}
	var arrived []string
	err = pollUntil(ctx, 5*time.Minute, 100*time.Millisecond, func() (bool, error) {
		l, err := e.banks[0].ledger()
		arrived = arrived[:0]
		for _, a := range l.Authorizations {
			if a.Stored {
				arrived = append(arrived, a.Reference)
			}
		}
		return len(arrived) >= *first, err
	})
	if err != nil {
		return fmt.Errorf("restart: waiting for %d advices: %w", *first, err)
	}
	// Where each of the first advices stands in the order the payments
	// were made (ids[k] is the k-th payment acknowledged).
	rank := make(map[string]int, len(ids))
	for k, id := range ids {
		rank[id] = k
	}
	worst := 0
	for _, ref := range arrived[:*first] {
		if r, ok := rank[ref]; ok {
			worst = max(worst, r)
		} else {
			worst = len(ids)
		}
	}
	fmt.Fprintf(stdout, "restart with %d queued payments and %d payments of history (database %.0f MB)\n", *queued, *history+*queued, float64(info)/1e6)
	fmt.Fprintf(stdout, "  serve start → /readyz 200, cold    %8.0f ms (bound ≤ 1000 ms)\n", ms(ready))
	fmt.Fprintf(stdout, "  serve start → /readyz 200, again   %8.0f ms (bound ≤ 1000 ms)\n", ms(readyAgain))
	fmt.Fprintf(stdout, "  the first %d advices forwarded are among the oldest %d queued payments (oldest first: at most %d, the terminals' overlap)\n",
		*first, worst+1, *first+conc)
	return nil
}

// payIDs makes n payments like load and returns the ids of the payments
// in the order storepay acknowledged them.
func (s *store) payIDs(ctx context.Context, n, conc int, body func(i int) map[string]any) ([]string, loadResult, error) {
	var ids []string
	res, err := s.loadEach(ctx, "", n, conc, body, func(out []byte) {
		var p struct{ ID string }
		json.Unmarshal(out, &p)
		ids = append(ids, p.ID)
	})
	return ids, res, err
}

// writeHistory writes n captured online card payments into the database
// at path, in transactions of 20,000.
func writeHistory(ctx context.Context, path string, n int) error {
	db, err := migrations.Open(ctx, path)
	if err != nil {
		return err
	}
	defer db.Close()
	day := time.Now().UTC().AddDate(0, 0, -30)
	err = db.Update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO orders (id, status, channel, currency, lines, total_amount, terminal_id, created_at, updated_at)
			VALUES ('ord_history', 'paid', 'walk_in', 'USD', '[]', 0, 'bench', ?, ?)`, migrations.FormatTime(day), migrations.FormatTime(day))
		return err
	})
	if err != nil {
		return err
	}
	const chunk = 20000
	for start := 0; start < n; start += chunk {
		end := min(start+chunk, n)
		err := db.Update(ctx, func(tx *sql.Tx) error {
			stmt, err := tx.Prepare(`INSERT INTO payments (id, order_id, method, status, mode, gateway, amount, authorized_amount,
				captured_amount, captured_at, currency, capture, auth_code, bank_auth_id, card_last4, terminal_id, created_at, updated_at)
				VALUES (?, 'ord_history', 'card', 'captured', 'online', 'bank-a', ?, ?, ?, ?, 'USD', 1, 'A1B2C3', ?, '4242', 'bench', ?, ?)`)
			if err != nil {
				return err
			}
			defer stmt.Close()
			for i := start; i < end; i++ {
				at := migrations.FormatTime(day.Add(time.Duration(i) * 2 * time.Second))
				a := int64(100 + i%50000)
				if _, err := stmt.Exec(fmt.Sprintf("pay_h%031x", i), a, a, a, at, fmt.Sprintf("auth_h%015x", i), at, at); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
