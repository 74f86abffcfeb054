package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"storepay/gateway/banksim"
	"storepay/migrations"
)

// The restore drill of docs/operations.md, end to end: a backup taken
// while the store sells (orders keep coming, card payments wait on a slow
// bank) holds payments in flight; the database is then lost, the backup
// restored with storepay restore, serve started again, and its resolver
// settles each payment that was in flight with the bank that took it:
// captured, the card charged exactly once.
func TestBackupRestoreDrill(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	s := startStore(t, []*bank{b}, func(c *Config) {
		c.Gateways[0].AttemptTimeout = Duration{10 * time.Second}
		c.PaymentBudget = Duration{15 * time.Second}
	})
	cfgPath := s.writeConfig()
	done := s.order(700)
	donePID := must(t, s.post("/v1/orders/"+done+"/payments", cardBody(700, visa, nil)), 201).str("id")

	// Load: card payments held 1.5 s at the bank, orders opened meanwhile.
	if err := b.sim.SetFaults("", banksim.Faults{Latency: &banksim.Latency{Fixed: 1500 * time.Millisecond}}); err != nil {
		t.Fatal(err)
	}
	const inFlight = 4
	orders := make([]string, inFlight)
	for i := range orders {
		orders[i] = s.order(int64(1000 + i))
	}
	var wg sync.WaitGroup
	answers := make(chan string, inFlight)
	for i, id := range orders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers <- rawPost(s.url+"/v1/orders/"+id+"/payments", s.terminal, fmt.Sprintf("drill-%d", i), cardBody(int64(1000+i), visa, nil))
		}()
	}
	stop := make(chan struct{})
	var opened sync.WaitGroup
	opened.Add(1)
	go func() {
		defer opened.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			rawPost(s.url+"/v1/orders", s.terminal, fmt.Sprintf("load-%d", i), map[string]any{"channel": "walk_in", "currency": "USD",
				"lines": []map[string]any{{"sku": "ITEM", "description": "item", "quantity": 1, "unit_amount": 100}}})
		}
	}()
	var pending []string
	waitFor(t, "the card payments to wait on the bank", 10*time.Second, func() bool {
		pending = pendingAuthorizations(t, s.app.DB.Read())
		return len(pending) == inFlight
	})

	bk := filepath.Join(t.TempDir(), "storepay-backup.db")
	var out, errb bytes.Buffer
	if c := exitCode(run(context.Background(), []string{"backup", "--config", cfgPath, "--to", bk}, nil, &out, &errb), &errb); c != 0 {
		t.Fatalf("backup: exit %d: %s", c, errb.String())
	}
	if !strings.Contains(out.String(), "backup "+bk+": ") || !strings.Contains(out.String(), " payments") {
		t.Fatalf("backup printed %q", out.String())
	}
	// A second backup to the same path is refused and leaves it alone.
	errb.Reset()
	if c := exitCode(run(context.Background(), []string{"backup", "--config", cfgPath, "--to", bk}, nil, &out, &errb), &errb); c != 1 || !strings.Contains(errb.String(), "refusing to overwrite") {
		t.Fatalf("backup over an existing file: exit %d: %s", c, errb.String())
	}
	wg.Wait()
	close(stop)
	opened.Wait()
	close(answers)
	for a := range answers {
		if !strings.HasPrefix(a, "201 ") {
			t.Fatalf("a payment during the backup: %s", a)
		}
	}
	clearAll(t, b)

	// The backup holds the payments as they were: in flight.
	snap, err := migrations.Check(context.Background(), bk)
	if err != nil {
		t.Fatal(err)
	}
	if snap.Payments != inFlight+1 {
		t.Fatalf("backup holds %d payments, want %d", snap.Payments, inFlight+1)
	}
	cp, err := sql.Open("sqlite", "file:"+bk+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	if got := pendingAuthorizations(t, cp); len(got) != inFlight {
		t.Fatalf("backup holds %d payments in flight, want %d (the bank held them 1.5 s)", len(got), inFlight)
	}
	cp.Close()

	// The disk is lost: the database is moved aside, the backup restored.
	s.close()
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Rename(s.cfg.Database+suffix, s.cfg.Database+suffix+".broken"); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
	out.Reset()
	errb.Reset()
	if c := exitCode(run(context.Background(), []string{"restore", "--config", cfgPath, "--from", bk}, nil, &out, &errb), &errb); c != 0 {
		t.Fatalf("restore: exit %d: %s", c, errb.String())
	}
	errb.Reset()
	if c := exitCode(run(context.Background(), []string{"restore", "--config", cfgPath, "--from", bk}, nil, &out, &errb), &errb); c != 1 || !strings.Contains(errb.String(), "aside") {
		t.Fatalf("restore over a database: exit %d: %s", c, errb.String())
	}
	s.open()
	for _, pid := range pending {
		p := s.waitPayment(pid, "captured")
		if n := b.sim.Ledger().ChargesFor(pid); n != 1 {
			t.Fatalf("payment %s charged %d times after the restore: %s", pid, n, p)
		}
	}
	if p := s.get("/v1/payments/" + donePID); p.str("status") != "captured" {
		t.Fatalf("a payment made before the backup: %s", p)
	}
}

// rawPost posts body as the terminal from any goroutine and returns
// "status body".
func rawPost(url, token, key string, body any) string {
	j, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", url, bytes.NewReader(j))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Idempotency-Key", key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return "error " + err.Error()
	}
	defer res.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(res.Body)
	return fmt.Sprintf("%d %s", res.StatusCode, buf.String())
}

// pendingAuthorizations lists the payments whose authorization is
// written ahead, sent to a bank (its name written before the call) and
// not answered yet.
func pendingAuthorizations(t *testing.T, db *sql.DB) []string {
	t.Helper()
	rows, err := db.Query(`SELECT id FROM payments WHERE status = 'pending' AND pending_op = 'authorize' AND gateway <> '' ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		rows.Scan(&id)
		ids = append(ids, id)
	}
	return ids
}
