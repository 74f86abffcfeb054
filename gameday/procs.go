package gameday

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// proc is a child process whose stderr goes to a log file in the run's
// directory.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startProc(dir, logName string, env []string, name string, args ...string) (*proc, io.ReadCloser, error) {
	logf, err := os.OpenFile(filepath.Join(dir, logName+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stderr = logf
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, stdout, nil
}

// kill sends SIGKILL (no chance to clean up) and waits.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits up to d, then kills.
func (p *proc) stop(d time.Duration) error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		p.kill()
		return fmt.Errorf("did not stop within %s of SIGTERM", d)
	}
}

// bank is a banksim process.
type bank struct {
	name, key string
	url       string
	admin     string
	proc      *proc
}

func startBank(dir, binary, name string) (*bank, error) {
	b := &bank{name: name, key: "key-" + name}
	p, stdout, err := startProc(dir, "banksim-"+name, nil, binary, "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--api-key", b.key)
	if err != nil {
		return nil, err
	}
	b.proc = p
	sc := bufio.NewScanner(stdout)
	timer := time.AfterFunc(10*time.Second, p.kill)
	defer timer.Stop()
	for sc.Scan() {
		line := sc.Text()
		if u, ok := strings.CutPrefix(line, "banksim listening on "); ok {
			b.url = u
		}
		if u, ok := strings.CutPrefix(line, "banksim admin on "); ok {
			b.admin = u
		}
		if b.url != "" && b.admin != "" {
			break
		}
	}
	go io.Copy(io.Discard, stdout)
	if b.url == "" || b.admin == "" {
		p.kill()
		return nil, fmt.Errorf("banksim %s did not start (see banksim-%s.log)", name, name)
	}
	for _, u := range []string{b.url, b.admin} {
		if err := loopback(u); err != nil {
			p.kill()
			return nil, err
		}
	}
	return b, nil
}

// loopback refuses anything but a loopback address: a game day aims its
// load and faults at this machine only.
func loopback(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(u.Hostname()); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("game days only target loopback, not %s", u.Host)
	}
	return nil
}

var adminClient = &http.Client{Timeout: 10 * time.Second}

func (b *bank) setFaults(faults map[string]any) error {
	body, _ := json.Marshal(faults)
	req, _ := http.NewRequest(http.MethodPut, b.admin+"/admin/faults", bytes.NewReader(body))
	res, err := adminClient.Do(req)
	if err != nil {
		return fmt.Errorf("banksim %s faults: %w", b.name, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(res.Body)
		return fmt.Errorf("banksim %s faults: %d %s", b.name, res.StatusCode, msg)
	}
	return nil
}

func (b *bank) clearFaults() error {
	req, _ := http.NewRequest(http.MethodDelete, b.admin+"/admin/faults", nil)
	res, err := adminClient.Do(req)
	if err != nil {
		return fmt.Errorf("banksim %s clear faults: %w", b.name, err)
	}
	res.Body.Close()
	return nil
}

type ledgerAuth struct {
	Reference string `json:"reference"`
	Status    string `json:"status"`
	Amount    int64  `json:"amount"`
	Captured  int64  `json:"captured_amount"`
	Refunded  int64  `json:"refunded_amount"`
}

func (b *bank) ledger() ([]ledgerAuth, error) {
	res, err := adminClient.Get(b.admin + "/admin/ledger")
	if err != nil {
		return nil, fmt.Errorf("banksim %s ledger: %w", b.name, err)
	}
	defer res.Body.Close()
	var l struct {
		Authorizations []ledgerAuth `json:"authorizations"`
	}
	if err := json.NewDecoder(res.Body).Decode(&l); err != nil {
		return nil, fmt.Errorf("banksim %s ledger: %w", b.name, err)
	}
	return l.Authorizations, nil
}

// store is the storepay serve process and what it takes to talk to it.
type store struct {
	binary, dir, cfgPath string
	env                  []string
	url                  string
	terminal, manager    string
	proc                 *proc
	starts               int
}

func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

const cardKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func newStore(ctx context.Context, dir, binary string, banks []*bank) (*store, error) {
	addr, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &store{binary: binary, dir: dir, url: "http://" + addr, env: []string{"STOREPAY_CARD_KEY=" + cardKey}}
	var gws []map[string]any
	for _, b := range banks {
		env := "KEY_" + strings.ToUpper(b.name)
		s.env = append(s.env, env+"="+b.key)
		gws = append(gws, map[string]any{"name": b.name, "protocol": "acquirer-json", "urls": []string{b.url},
			"merchant_id": "store-gameday", "api_key_env": env, "attempt_timeout": "500ms", "backoff_min": "10ms",
			"backoff_max": "100ms", "breaker_delay": "1s", "breaker_window": "5s", "breaker_min_calls": 3, "probe_interval": "200ms"})
	}
	cfg := map[string]any{"store_id": "store-gameday", "listen": addr, "database": filepath.Join(dir, "storepay.db"),
		"card_key_env": "STOREPAY_CARD_KEY", "resolve_interval": "200ms", "payment_budget": "10s", "shutdown_timeout": "15s",
		"gateways": gws, "offline": map[string]any{"floor_limit": 10000, "total_limit": 5000000, "max_age": "72h"},
		"forwarding": map[string]any{"interval": "200ms", "backoff_min": "50ms", "backoff_max": "500ms"}}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	s.cfgPath = filepath.Join(dir, "storepay.json")
	if err := os.WriteFile(s.cfgPath, b, 0o600); err != nil {
		return nil, err
	}
	if s.terminal, err = s.cli(ctx, "devices", "enroll", "--config", s.cfgPath, "--name", "lane-1", "--role", "terminal"); err != nil {
		return nil, err
	}
	if s.manager, err = s.cli(ctx, "devices", "enroll", "--config", s.cfgPath, "--name", "gameday-manager", "--role", "manager"); err != nil {
		return nil, err
	}
	return s, s.start()
}

func (s *store) cli(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, s.binary, args...)
	cmd.Env = append(os.Environ(), s.env...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("storepay %s: %w: %s", strings.Join(args[:2], " "), err, strings.TrimSpace(errb.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

// start runs storepay serve and waits until it is ready.
func (s *store) start() error {
	p, stdout, err := startProc(s.dir, "storepay", s.env, s.binary, "serve", "--config", s.cfgPath)
	if err != nil {
		return err
	}
	go io.Copy(io.Discard, stdout)
	s.proc = p
	s.starts++
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := adminClient.Get(s.url + "/readyz")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("storepay exited at start: %v (see storepay.log)", p.err)
		default:
		}
		if time.Now().After(deadline) {
			return errors.New("storepay not ready within 30s (see storepay.log)")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
