package chaos

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// setFileSizeLimit caps the size of any file storepay writes (RLIMIT_FSIZE):
// past it every write fails with EFBIG, which SQLite sees exactly as a
// full disk. 0 lifts the cap.
func setFileSizeLimit(t *testing.T, p *proc, limit uint64) {
	t.Helper()
	lim := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	if limit > 0 {
		lim.Cur = limit
	}
	if err := unix.Prlimit(p.cmd.Process.Pid, unix.RLIMIT_FSIZE, &lim, nil); err != nil {
		t.Fatalf("prlimit: %v", err)
	}
}

func dbSize(t *testing.T, s *store) uint64 {
	t.Helper()
	var max int64
	for _, suffix := range []string{"", "-wal"} {
		if fi, err := os.Stat(filepath.Join(s.dir, "storepay.db") + suffix); err == nil && fi.Size() > max {
			max = fi.Size()
		}
	}
	return uint64(max)
}

// The disk fills up under storepay: writes fail with a clear 503, readiness
// says so, nothing half-done is acknowledged, and everything acknowledged
// before is still there. When space comes back, storepay recovers by
// itself, and the terminals' retries with the same keys go through.
func TestDiskFull(t *testing.T) {
	a := startBank(t, "bank-a", 1)
	s := newStore(t, []gw{{bank: a}}, nil)
	var acked []resp
	for i := 0; i < 20; i++ {
		acked = append(acked, s.pay(500, nil))
	}
	setFileSizeLimit(t, s.proc, dbSize(t, s))
	type try struct {
		path, key string
		body      map[string]any
		r         resp
	}
	var failed []try
	for i := 0; i < 300 && len(failed) < 20; i++ {
		body := map[string]any{"channel": "walk_in", "currency": "USD", "lines": []map[string]any{{"sku": "ITEM", "quantity": 1, "unit_amount": 500}}}
		key := s.key()
		r := s.call("POST", "/v1/orders", s.terminal, key, body)
		if r.status != 201 {
			failed = append(failed, try{"/v1/orders", key, body, r})
			continue
		}
		key = s.key()
		p := s.call("POST", "/v1/orders/"+r.str("id")+"/payments", s.terminal, key, card(500, nil))
		if p.status == 201 {
			acked = append(acked, p)
			continue
		}
		failed = append(failed, try{"/v1/orders/" + r.str("id") + "/payments", key, card(500, nil), p})
	}
	if len(failed) == 0 {
		var lim unix.Rlimit
		unix.Prlimit(s.proc.cmd.Process.Pid, unix.RLIMIT_FSIZE, nil, &lim)
		t.Fatalf("the disk never filled up (files now %d bytes, limit %d): the test proved nothing", dbSize(t, s), lim.Cur)
	}
	for _, f := range failed {
		if f.r.status != 503 || f.r.str("code") != "storage_unavailable" {
			t.Fatalf("a write on a full disk answered %s, want 503 storage_unavailable", f.r)
		}
	}
	if res, err := http.Get(s.url + "/readyz"); err != nil || res.StatusCode != 503 {
		t.Fatalf("/readyz on a full disk: %v %v", res.StatusCode, err)
	}
	if res, err := http.Get(s.url + "/healthz"); err != nil || res.StatusCode != 200 {
		t.Fatalf("/healthz on a full disk: %v %v", res.StatusCode, err)
	}

	// Space comes back.
	setFileSizeLimit(t, s.proc, 0)
	waitFor(t, "storepay to be ready again", 10*time.Second, func() bool {
		res, err := http.Get(s.url + "/readyz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == 200
	})
	for _, f := range failed {
		r := s.call("POST", f.path, s.terminal, f.key, f.body)
		if r.status != 201 {
			t.Fatalf("retry of %s after the disk recovered: %s", f.path, r)
		}
		if r.str("order_id") == "" { // an order: pay it too
			r = s.post("/v1/orders/"+r.str("id")+"/payments", card(500, nil))
		}
		if r.str("status") != "captured" {
			t.Fatalf("payment after the disk recovered: %s", r)
		}
		acked = append(acked, r)
	}
	// A restart loses nothing that was acknowledged.
	s.proc.stop(t)
	s.start()
	charges := where(t, a)
	for _, p := range acked {
		got := s.get("/v1/payments/" + p.str("id"))
		if got.str("status") != p.str("status") || charges[p.str("id")] != "bank-a" {
			t.Fatalf("acknowledged %s, now %s (charged at %q)", p, got, charges[p.str("id")])
		}
	}
}
