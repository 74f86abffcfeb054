package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const (
	cardKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	visa    = "4242424242424242"
)

var bin struct{ storepay, banksim string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "storepay-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin.storepay = filepath.Join(dir, "storepay")
	bin.banksim = filepath.Join(dir, "banksim")
	for out, pkg := range map[string]string{bin.storepay: "storepay/cmd/storepay", bin.banksim: "storepay/cmd/banksim"} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", pkg, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// mustLoopback refuses to aim load at anything but loopback.
func mustLoopback(t testing.TB, raw string) {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		t.Fatalf("chaos tests only target loopback, not %s", u.Host)
	}
}

// proc is a child process whose output goes to a file the test prints
// when it fails.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

func start(t testing.TB, logName string, env []string, name string, args ...string) (*proc, io.Reader) {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), logName+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			lines := strings.Split(string(b), "\n")
			if len(lines) > 60 {
				lines = lines[len(lines)-60:]
			}
			t.Logf("--- last lines of %s:\n%s", logName, strings.Join(lines, "\n"))
		}
	})
	return p, stdout
}

func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits for a clean exit.
func (p *proc) stop(t testing.TB) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			t.Fatalf("process did not stop cleanly: %v", p.err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("process did not stop within 60s of SIGTERM")
	}
}

// bank is a banksim process.
type bank struct {
	name  string
	key   string
	urls  []string
	admin string
	proc  *proc
	iso   bool // an ISO 8583 switch
}

func startBank(t testing.TB, name string, listeners int) *bank {
	return startBankProtocol(t, name, listeners, "acquirer-json")
}

// startISOBank starts banksim as an ISO 8583 switch (tcp:// URLs).
func startISOBank(t testing.TB, name string, listeners int) *bank {
	b := startBankProtocol(t, name, listeners, "iso8583")
	b.iso = true
	return b
}

func startBankProtocol(t testing.TB, name string, listeners int, protocol string) *bank {
	t.Helper()
	b := &bank{name: name, key: "key-" + name}
	addrs := strings.TrimSuffix(strings.Repeat("127.0.0.1:0,", listeners), ",")
	p, stdout := start(t, "banksim-"+name, nil, bin.banksim, "--protocol", protocol, "--listen", addrs, "--admin", "127.0.0.1:0", "--api-key", b.key)
	b.proc = p
	sc := bufio.NewScanner(stdout)
	deadline := time.AfterFunc(10*time.Second, p.kill)
	defer deadline.Stop()
	for sc.Scan() {
		line := sc.Text()
		if u, ok := strings.CutPrefix(line, "banksim listening on "); ok {
			b.urls = append(b.urls, u)
		}
		if u, ok := strings.CutPrefix(line, "banksim admin on "); ok {
			b.admin = u
		}
		if b.admin != "" && len(b.urls) == listeners {
			break
		}
	}
	go io.Copy(io.Discard, stdout)
	if b.admin == "" || len(b.urls) != listeners {
		t.Fatalf("banksim %s did not start", name)
	}
	for _, u := range append([]string{b.admin}, b.urls...) {
		mustLoopback(t, u)
	}
	return b
}

// faults sets banksim faults (JSON as the admin API takes it) on one URL,
// or on all when url is "".
func (b *bank) faults(t testing.TB, url string, faults string) {
	t.Helper()
	body := faults
	if url != "" {
		body = strings.Replace(faults, "{", `{"url":"`+url+`",`, 1)
	}
	req, _ := http.NewRequest(http.MethodPut, b.admin+"/admin/faults", strings.NewReader(body))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 {
		msg, _ := io.ReadAll(res.Body)
		t.Fatalf("set faults %s: %d %s", body, res.StatusCode, msg)
	}
}

func (b *bank) clear(t testing.TB) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, b.admin+"/admin/faults", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
}

type ledgerAuth struct {
	ID             string `json:"id"`
	RRN            string `json:"rrn"`
	Reference      string `json:"reference"`
	Status         string `json:"status"`
	Amount         int64  `json:"amount"`
	CapturedAmount int64  `json:"captured_amount"`
	Stored         bool   `json:"stored"`
}

type ledger struct {
	Authorizations []ledgerAuth                `json:"authorizations"`
	Requests       map[string]map[string]int64 `json:"requests"`
}

func (b *bank) ledger(t testing.TB) ledger {
	t.Helper()
	res, err := http.Get(b.admin + "/admin/ledger")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var l ledger
	if err := json.NewDecoder(res.Body).Decode(&l); err != nil {
		t.Fatal(err)
	}
	return l
}

// charges counts approved, not reversed authorizations per reference.
func (l ledger) charges() map[string]int {
	out := map[string]int{}
	for _, a := range l.Authorizations {
		if a.Status == "approved" {
			out[a.Reference]++
		}
	}
	return out
}

func (l ledger) calls(url, endpoint string) int64 { return l.Requests[url][endpoint] }

// store is a storepay process with its config, database and tokens.
type store struct {
	t        testing.TB
	dir      string
	cfgPath  string
	env      []string
	url      string
	terminal string
	manager  string
	proc     *proc
	seq      atomic.Int64
}

// gw is one gateway entry of the config, with extra keys.
type gw struct {
	bank  *bank
	urls  []string // default: all the bank's URLs
	extra map[string]any
}

func newStore(t testing.TB, gws []gw, extra map[string]any) *store {
	t.Helper()
	s := &store{t: t, dir: t.TempDir()}
	port := freePort(t)
	s.url = "http://" + port
	cfg := map[string]any{"store_id": "store-042", "listen": port, "database": filepath.Join(s.dir, "storepay.db"),
		"card_key_env": "STOREPAY_CARD_KEY", "resolve_interval": "100ms", "payment_budget": "10s",
		"offline": map[string]any{"floor_limit": 10000, "total_limit": 500000, "max_age": "72h"}}
	s.env = []string{"STOREPAY_CARD_KEY=" + cardKey}
	var gateways []map[string]any
	for _, g := range gws {
		urls := g.urls
		if urls == nil {
			urls = g.bank.urls
		}
		envName := "KEY_" + strings.ReplaceAll(g.bank.name, "-", "_")
		s.env = append(s.env, envName+"="+g.bank.key)
		m := map[string]any{"name": g.bank.name, "protocol": "acquirer-json", "urls": urls, "merchant_id": "store-042",
			"api_key_env": envName, "attempt_timeout": "300ms", "backoff_min": "10ms", "backoff_max": "50ms",
			"breaker_delay": "1s", "breaker_window": "5s", "breaker_min_calls": 3, "probe_interval": "200ms"}
		if g.bank.iso {
			delete(m, "api_key_env")
			m["protocol"], m["terminal_id"] = "iso8583", "SP042001"
		}
		for k, v := range g.extra {
			m[k] = v
		}
		gateways = append(gateways, m)
	}
	cfg["gateways"] = gateways
	for k, v := range extra {
		cfg[k] = v
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	s.cfgPath = filepath.Join(s.dir, "storepay.json")
	if err := os.WriteFile(s.cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	s.terminal = s.cli("devices", "enroll", "--config", s.cfgPath, "--name", "lane-3", "--role", "terminal")
	s.manager = s.cli("devices", "enroll", "--config", s.cfgPath, "--name", "boss", "--role", "manager")
	s.start()
	return s
}

func freePort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (s *store) cli(args ...string) string {
	s.t.Helper()
	out, err := exec.Command(bin.storepay, args...).Output()
	if err != nil {
		s.t.Fatalf("storepay %v: %v", args, err)
	}
	return strings.TrimSpace(string(out))
}

// start runs storepay serve and waits until it is ready.
func (s *store) start() {
	s.t.Helper()
	s.proc, _ = start(s.t, "storepay", s.env, bin.storepay, "serve", "--config", s.cfgPath)
	deadline := time.Now().Add(20 * time.Second)
	for {
		res, err := http.Get(s.url + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == 200 {
				return
			}
		}
		select {
		case <-s.proc.done:
			s.t.Fatalf("storepay exited: %v", s.proc.err)
		default:
		}
		if time.Now().After(deadline) {
			s.t.Fatal("storepay not ready within 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// crash kills storepay with SIGKILL: no chance to clean up.
func (s *store) crash() { s.proc.kill() }

type resp struct {
	status int
	raw    []byte
	body   map[string]any
}

func (r resp) str(k string) string {
	v, _ := r.body[k].(string)
	return v
}

func (r resp) String() string { return fmt.Sprintf("%d %s", r.status, r.raw) }

var client = &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

func (s *store) do(method, path, token, key string, body any) (resp, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequestWithContext(context.Background(), method, s.url+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	res, err := client.Do(req)
	if err != nil {
		return resp{}, err
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	r := resp{status: res.StatusCode, raw: raw}
	json.Unmarshal(raw, &r.body)
	return r, nil
}

func (s *store) call(method, path, token, key string, body any) resp {
	s.t.Helper()
	r, err := s.do(method, path, token, key, body)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

func (s *store) key() string { return fmt.Sprintf("k-%d-%d", time.Now().UnixNano(), s.seq.Add(1)) }

func (s *store) post(path string, body any) resp {
	return s.call("POST", path, s.terminal, s.key(), body)
}
func (s *store) get(path string) resp { return s.call("GET", path, s.terminal, "", nil) }

func (s *store) order(total int64) string {
	s.t.Helper()
	r := s.post("/v1/orders", map[string]any{"channel": "walk_in", "currency": "USD",
		"lines": []map[string]any{{"sku": "ITEM", "quantity": 1, "unit_amount": total}}})
	if r.status != 201 {
		s.t.Fatalf("create order: %s", r)
	}
	return r.str("id")
}

func card(amount int64, extra map[string]any) map[string]any {
	b := map[string]any{"method": "card", "amount": amount, "capture": true,
		"card": map[string]any{"pan": visa, "exp_month": 12, "exp_year": 2030}}
	for k, v := range extra {
		b[k] = v
	}
	return b
}

// pay opens an order and pays it by card; it returns the payment.
func (s *store) pay(amount int64, extra map[string]any) resp {
	s.t.Helper()
	r := s.post("/v1/orders/"+s.order(amount)+"/payments", card(amount, extra))
	if r.status != 201 {
		s.t.Fatalf("pay: %s", r)
	}
	return r
}

func (s *store) gateways() map[string]map[string]any {
	s.t.Helper()
	r := s.call("GET", "/v1/gateways", s.manager, "", nil)
	out := map[string]map[string]any{}
	for _, g := range r.body["data"].([]any) {
		m := g.(map[string]any)
		out[m["name"].(string)] = m
	}
	return out
}

func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

var _ = sync.Mutex{}
