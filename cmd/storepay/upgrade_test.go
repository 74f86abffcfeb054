package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"storepay/gateway"
	"storepay/migrations"
)

// Upgrades lose nothing: for every schema version a storepay ever shipped
// (every migration, 0001 up to now), a database left at that version
// holding a payment whose authorization was written ahead and in flight
// and (from 0002, which brought store-and-forward) records queued,
// forwarding (a crash mid-forward), held and expired is upgraded, once
// by `storepay migrate` and then serve, once by serve alone. Every payment
// then reaches the bank exactly once: the in-flight authorization and the
// queued and forwarding records by themselves, the held one when a
// manager releases it, the expired one when a manager replays it; the
// bank simulator's ledger holds one charge for each and nothing else.
func TestUpgradeFromEveryVersionForwardsEachRecordOnce(t *testing.T) {
	list, err := migrations.List()
	if err != nil {
		t.Fatal(err)
	}
	vault := mustVault(t)
	for _, m := range list {
		// The old database, built once per version and copied for each
		// way of upgrading it (fsyncs off: building it is not under test).
		fixture := filepath.Join(t.TempDir(), fmt.Sprintf("v%04d.db", m.Version))
		raw, err := sql.Open("sqlite", "file:"+fixture+"?_pragma=journal_mode(WAL)&_pragma=synchronous(OFF)")
		if err != nil {
			t.Fatal(err)
		}
		if err := migrations.ApplyTo(context.Background(), raw, m.Version); err != nil {
			t.Fatal(err)
		}
		ids := seedOldDatabase(t, raw, m.Version, vault)
		if err := raw.Close(); err != nil {
			t.Fatal(err)
		}
		image, err := os.ReadFile(fixture)
		if err != nil {
			t.Fatal(err)
		}
		for _, withMigrate := range []bool{true, false} {
			name := fmt.Sprintf("from_%04d/serve", m.Version)
			if withMigrate {
				name = fmt.Sprintf("from_%04d/migrate_then_serve", m.Version)
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				b := startBank(t, "bank-a", 1)
				cfg, env := newConfig(t, []*bank{b})
				if err := os.WriteFile(cfg.Database, image, 0o600); err != nil {
					t.Fatal(err)
				}
				if withMigrate {
					path := filepath.Join(t.TempDir(), "storepay.json")
					j, _ := json.Marshal(cfg)
					os.WriteFile(path, j, 0o600)
					var out, errb bytes.Buffer
					if c := exitCode(run(context.Background(), []string{"migrate", "--config", path}, nil, &out, &errb), &errb); c != 0 {
						t.Fatalf("migrate from %d: exit %d: %s", m.Version, c, errb.String())
					}
				}
				s := &store{t: t, cfg: cfg, env: env}
				s.open()
				s.exec(`SELECT 1`) // the writer answers on the upgraded schema
				ctx := context.Background()
				for _, pid := range ids.automatic {
					waitCharged(t, s, b, pid)
				}
				if ids.held != "" {
					if n := b.sim.Ledger().ChargesFor(ids.held); n != 0 {
						t.Fatalf("a held record was forwarded by itself (%d charges)", n)
					}
					if n := b.sim.Ledger().ChargesFor(ids.expired); n != 0 {
						t.Fatalf("an expired record was forwarded by itself (%d charges)", n)
					}
					if _, err := s.app.SAF.Release(ctx, "saf_"+ids.held, "boss", "upgrade test"); err != nil {
						t.Fatal(err)
					}
					if _, err := s.app.SAF.Replay(ctx, "saf_"+ids.expired, "boss", "upgrade test"); err != nil {
						t.Fatal(err)
					}
					waitCharged(t, s, b, ids.held)
					waitCharged(t, s, b, ids.expired)
				}
				// A restart forwards nothing again.
				s.restart()
				if _, err := s.app.Orders.Resolve(ctx); err != nil {
					t.Fatal(err)
				}
				all := ids.all()
				approved := 0
				for _, a := range b.sim.Ledger().Authorizations {
					if a.Status == "approved" {
						approved++
					}
				}
				for _, pid := range all {
					if n := b.sim.Ledger().ChargesFor(pid); n != 1 {
						t.Errorf("payment %s charged %d times", pid, n)
					}
				}
				if approved != len(all) {
					t.Errorf("the bank holds %d charges for %d payments", approved, len(all))
				}
			})
		}
	}
}

// waitCharged waits until the payment is captured in storepay and
// charged at the bank.
func waitCharged(t *testing.T, s *store, b *bank, pid string) {
	t.Helper()
	waitFor(t, "payment "+pid+" to reach the bank", 10*time.Second, func() bool {
		var status string
		s.app.DB.Read().QueryRow(`SELECT status FROM payments WHERE id = ?`, pid).Scan(&status)
		return status == "captured" && b.sim.Ledger().ChargesFor(pid) > 0
	})
}

// oldIDs names the payments seeded into an old database.
type oldIDs struct {
	automatic     []string // forwarded or resolved without anyone's help
	held, expired string   // need a manager
}

func (o oldIDs) all() []string {
	out := append([]string(nil), o.automatic...)
	if o.held != "" {
		out = append(out, o.held, o.expired)
	}
	return out
}

// seedOldDatabase writes what a store running version v holds, with the
// columns that version had (every later migration only adds columns with
// defaults, or rewrites what it changed): a card payment whose
// authorization was written ahead and sent to bank-a with no answer yet,
// and from version 2 one stored offline payment per outstanding SAF
// status.
func seedOldDatabase(t *testing.T, db *sql.DB, v int, vault *gateway.Vault) oldIDs {
	t.Helper()
	now := time.Now()
	at := migrations.FormatTime(now.Add(-10 * time.Second))
	card := testCard()
	fp := vault.Fingerprint(card.PAN)
	var ids oldIDs
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.Exec(q, args...); err != nil {
			t.Fatalf("seed at version %d: %v\n%s", v, err, q)
		}
	}
	order := func(id string, amount int64, status string, paid int64) {
		exec(`INSERT INTO orders (id, status, channel, currency, lines, total_amount, paid_amount, terminal_id, created_at, updated_at)
			VALUES (?, ?, 'walk_in', 'USD', '[]', ?, ?, 'lane-3', ?, ?)`, "ord_"+id, status, amount, paid, at, at)
	}
	// In flight: written ahead, sent to bank-a, no answer recorded.
	pid := fmt.Sprintf("pay_v%04d_inflight", v)
	sealed, err := vault.Seal(pid, card)
	if err != nil {
		t.Fatal(err)
	}
	order(pid, 1200, "open", 0)
	exec(`INSERT INTO payments (id, order_id, method, status, mode, gateway, amount, currency, capture, card_brand, card_bin,
		card_last4, card_fingerprint, card_sealed, terminal_id, pending_op, pending_key, pending_since, created_at, updated_at)
		VALUES (?, ?, 'card', 'pending', 'online', 'bank-a', 1200, 'USD', 1, 'visa', '424242', '4242', ?, ?, 'lane-3',
		'authorize', ?, ?, ?, ?)`, pid, "ord_"+pid, fp, sealed, pid, at, at, at)
	ids.automatic = append(ids.automatic, pid)
	if v < 2 {
		return ids // no store-and-forward before 0002
	}
	var total int64
	for i, status := range []string{"queued", "forwarding", "held", "expired"} {
		pid := fmt.Sprintf("pay_v%04d_%s", v, status)
		amount := int64(2000 + 100*i)
		total += amount
		sealed, err := vault.Seal(pid, card)
		if err != nil {
			t.Fatal(err)
		}
		gw := ""
		if status == "forwarding" {
			gw = "bank-a" // it was being sent there when storepay stopped
		}
		order(pid, amount, "paid", amount)
		exec(`INSERT INTO payments (id, order_id, method, status, mode, amount, currency, capture, card_brand, card_bin,
			card_last4, card_fingerprint, terminal_id, created_at, updated_at)
			VALUES (?, ?, 'card', 'stored', 'offline', ?, 'USD', 1, 'visa', '424242', '4242', ?, 'lane-3', ?, ?)`,
			pid, "ord_"+pid, amount, fp, at, at)
		exec(`INSERT INTO saf_records (id, payment_id, idem_key, gateway, terminal_id, amount, currency, capture, fingerprint,
			card_last4, card_sealed, status, created_at, next_attempt_at, updated_at)
			VALUES (?, ?, ?, ?, 'lane-3', ?, 'USD', 1, ?, '4242', ?, ?, ?, ?, ?)`,
			"saf_"+pid, pid, pid, gw, amount, fp, sealed, status, at, at, at)
		switch status {
		case "held":
			ids.held = pid
		case "expired":
			ids.expired = pid
		default:
			ids.automatic = append(ids.automatic, pid)
		}
	}
	exec(`UPDATE saf_outstanding SET count = 4, amount = ?`, total)
	return ids
}
