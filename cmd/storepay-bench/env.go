package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// common are the flags every bench that runs storepay takes.
type common struct {
	dir  string
	bin  string
	keep bool
}

func (c *common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.dir, "dir", "", "`folder` on the disk to measure (default: the system's temp folder)")
	fs.StringVar(&c.bin, "bin", "", "`folder` holding prebuilt storepay and banksim binaries (default: build them)")
	fs.BoolVar(&c.keep, "keep", false, "keep the bench's folder (database, configs, logs of the children)")
}

// bank is a banksim child.
type bank struct {
	name, key, protocol string
	urls                []string
	admin               string
	proc                *child
}

// startBank runs banksim speaking protocol on one loopback listener.
func startBank(bins binaries, dir, name, protocol string, args ...string) (*bank, error) {
	b := &bank{name: name, key: "key-" + name, protocol: protocol}
	args = append([]string{"-protocol", protocol, "-listen", "127.0.0.1:0", "-admin", "127.0.0.1:0",
		"-api-key", b.key, "-log-level", "warn"}, args...)
	p, stdout, err := startChild(dir, "banksim-"+name, nil, bins.banksim, args...)
	if err != nil {
		return nil, err
	}
	b.proc = p
	err = readLines(p, stdout, 20*time.Second, func(line string) bool {
		if u, ok := strings.CutPrefix(line, "banksim listening on "); ok {
			b.urls = append(b.urls, u)
		}
		if u, ok := strings.CutPrefix(line, "banksim admin on "); ok {
			b.admin = u
		}
		return b.admin != "" && len(b.urls) == 1
	})
	if err == nil {
		for _, u := range append([]string{b.admin}, b.urls...) {
			if err = loopback(u); err != nil {
				break
			}
		}
	}
	if err != nil {
		p.kill()
		return nil, err
	}
	return b, nil
}

// setFaults installs faults (as the admin API takes them) on every
// listener.
func (b *bank) setFaults(faults map[string]any) error {
	body, _ := json.Marshal(faults)
	req, _ := http.NewRequest(http.MethodPut, b.admin+"/admin/faults", bytes.NewReader(body))
	return adminCall(req, nil)
}

func (b *bank) clearFaults() error {
	req, _ := http.NewRequest(http.MethodDelete, b.admin+"/admin/faults", nil)
	return adminCall(req, nil)
}

// ledger is the part of banksim's ledger the benches read.
type ledger struct {
	Authorizations []struct {
		Reference string `json:"reference"`
		Status    string `json:"status"`
		Stored    bool   `json:"stored"`
	} `json:"authorizations"`
}

func (b *bank) ledger() (ledger, error) {
	var l ledger
	req, _ := http.NewRequest(http.MethodGet, b.admin+"/admin/ledger", nil)
	return l, adminCall(req, &l)
}

func adminCall(req *http.Request, out any) error {
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %d %s", req.Method, req.URL.Path, res.StatusCode, body)
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}

// store is a `storepay serve` child with its config, database and tokens.
type store struct {
	bins     binaries
	dir      string
	cfgPath  string
	dbPath   string
	env      []string
	url      string
	terminal string
	manager  string
	proc     *child
	client   *http.Client
}

// newStore writes a config for the banks (in priority order), enrolls a
// terminal and a manager, and starts serve. tweak may change the config
// (a map as the JSON file holds it) before it is written.
func newStore(ctx context.Context, bins binaries, dir string, banks []*bank, tweak func(cfg map[string]any)) (*store, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &store{bins: bins, dir: dir, url: "http://" + port, dbPath: filepath.Join(dir, "storepay.db"),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}}
	s.env = []string{"STOREPAY_CARD_KEY=" + randomHex(32)}
	var gateways []map[string]any
	for _, b := range banks {
		g := map[string]any{"name": b.name, "protocol": b.protocol, "urls": b.urls, "merchant_id": "bench"}
		if b.protocol == "iso8583" {
			g["terminal_id"] = "BENCH001"
		} else {
			envName := "KEY_" + strings.ReplaceAll(b.name, "-", "_")
			s.env = append(s.env, envName+"="+b.key)
			g["api_key_env"] = envName
		}
		gateways = append(gateways, g)
	}
	cfg := map[string]any{"store_id": "bench", "listen": port, "database": s.dbPath, "card_key_env": "STOREPAY_CARD_KEY",
		"log_level": "warn", "gateways": gateways,
		"offline": map[string]any{"floor_limit": 10000, "total_limit": int64(1) << 40, "max_age": "72h"}}
	if tweak != nil {
		tweak(cfg)
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	s.cfgPath = filepath.Join(dir, "storepay.json")
	if err := os.WriteFile(s.cfgPath, b, 0o600); err != nil {
		return nil, err
	}
	if s.terminal, err = s.cli(ctx, "devices", "enroll", "--config", s.cfgPath, "--name", "bench-lane", "--role", "terminal"); err != nil {
		return nil, err
	}
	if s.manager, err = s.cli(ctx, "devices", "enroll", "--config", s.cfgPath, "--name", "bench-manager", "--role", "manager"); err != nil {
		return nil, err
	}
	if _, err := s.start(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// cli runs a storepay command to completion and returns its stdout.
func (s *store) cli(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, s.bins.storepay, args...)
	cmd.Env = append(os.Environ(), s.env...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("storepay %s: %w: %s", strings.Join(args, " "), err, errb.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// start runs serve and waits until /readyz answers 200; it returns the
// time from starting the process to that answer.
func (s *store) start(ctx context.Context) (time.Duration, error) {
	if err := loopback(s.url); err != nil {
		return 0, err
	}
	t0 := time.Now()
	p, stdout, err := startChild(s.dir, "storepay", s.env, s.bins.storepay, "serve", "--config", s.cfgPath)
	if err != nil {
		return 0, err
	}
	go io.Copy(io.Discard, stdout)
	s.proc = p
	var ready time.Duration
	err = pollUntil(ctx, 60*time.Second, 2*time.Millisecond, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("storepay exited: %v: %s", p.err, p.tail())
		}
		res, err := s.client.Get(s.url + "/readyz")
		if err != nil {
			return false, nil
		}
		res.Body.Close()
		ready = time.Since(t0)
		return res.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		p.kill()
		return 0, fmt.Errorf("storepay serve not ready: %w", err)
	}
	return ready, nil
}

// close stops serve cleanly.
func (s *store) close() error {
	if s.proc == nil {
		return nil
	}
	s.client.CloseIdleConnections()
	err := s.proc.stop(60 * time.Second)
	s.proc = nil
	return err
}

// cpu is the serve process's CPU time so far.
func (s *store) cpu() (time.Duration, bool) { return processCPU(s.proc.pid()) }

// do sends one request with token (and an Idempotency-Key when key is
// not empty) and returns the status and body.
func (s *store) do(ctx context.Context, method, path, token, key string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, s.url+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := s.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	return res.StatusCode, out, err
}

// post is a terminal's POST.
func (s *store) post(ctx context.Context, path, key string, body any) (int, []byte, error) {
	return s.do(ctx, http.MethodPost, path, s.terminal, key, body)
}

// estop sets the forwarder's emergency stop (a manager call).
func (s *store) estop(ctx context.Context, state string) error {
	status, out, err := s.do(ctx, http.MethodPut, "/v1/estop", s.manager, "", map[string]any{"state": state, "reason": "bench"})
	if err == nil && status != http.StatusOK {
		err = fmt.Errorf("PUT /v1/estop %s: %d %s", state, status, out)
	}
	return err
}

// gatewayState is one entry of GET /v1/gateways.
type gatewayState struct {
	Name                string `json:"name"`
	State               string `json:"state"`
	ConsecutiveFailures int    `json:"consecutive_failures"`
}

func (s *store) gateways(ctx context.Context) ([]gatewayState, error) {
	status, out, err := s.do(ctx, http.MethodGet, "/v1/gateways", s.manager, "", nil)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("GET /v1/gateways: %d %s", status, out)
	}
	var v struct{ Data []gatewayState }
	return v.Data, json.Unmarshal(out, &v)
}

// metric reads one unlabelled sample of /metrics (Prometheus text).
func (s *store) metric(ctx context.Context, name string) (float64, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.url+"/metrics", nil)
	res, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(body), "\n") {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || (rest != "" && rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		f := strings.Fields(rest[strings.LastIndexByte(rest, '}')+1:])
		if len(f) == 0 {
			continue
		}
		return strconv.ParseFloat(f[0], 64)
	}
	return 0, fmt.Errorf("/metrics has no %s", name)
}

// env is a bench's folder, its banks and its store.
type env struct {
	c       common
	dir     string
	bins    binaries
	cleanup func()
	banks   []*bank
	store   *store
}

// bankSpec is one bank to start: its protocol and extra banksim flags.
type bankSpec struct {
	protocol string
	args     []string
}

func jsonBank() bankSpec { return bankSpec{protocol: "acquirer-json"} }

// newEnv builds the binaries, starts the banks (named bank-a, bank-b, …)
// and a store paying through them in that order.
func newEnv(ctx context.Context, c common, stderr io.Writer, specs []bankSpec, tweak func(cfg map[string]any)) (*env, error) {
	dir, err := os.MkdirTemp(c.dir, "storepay-bench-")
	if err != nil {
		return nil, err
	}
	e := &env{c: c, dir: dir}
	e.bins, e.cleanup, err = buildBinaries(ctx, c.bin, stderr)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	for i, sp := range specs {
		b, err := startBank(e.bins, dir, fmt.Sprintf("bank-%c", 'a'+i), sp.protocol, sp.args...)
		if err != nil {
			e.close(stderr)
			return nil, err
		}
		e.banks = append(e.banks, b)
	}
	if e.store, err = newStore(ctx, e.bins, dir, e.banks, tweak); err != nil {
		e.close(stderr)
		return nil, err
	}
	return e, nil
}

// close stops every child and removes the folder (unless -keep).
func (e *env) close(stderr io.Writer) {
	var errs []error
	if e.store != nil {
		errs = append(errs, e.store.close())
	}
	for _, b := range e.banks {
		b.proc.stop(10 * time.Second)
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintln(stderr, "storepay-bench: stopping storepay:", err)
	}
	if e.cleanup != nil {
		e.cleanup()
	}
	if e.c.keep {
		fmt.Fprintln(stderr, "storepay-bench: kept", e.dir)
		return
	}
	os.RemoveAll(e.dir)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
