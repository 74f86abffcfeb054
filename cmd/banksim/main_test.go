package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"storepay/gateway/iso8583"
)

// started is a banksim run by the test, with the URLs it printed.
type started struct {
	urls  []string
	admin string
	stop  context.CancelFunc
	err   error         // run's result, once exited is closed
	exit  chan struct{} // closed when run returned
}

// wait stops banksim and returns run's result.
func (s *started) wait(t *testing.T) error {
	t.Helper()
	s.stop()
	select {
	case <-s.exit:
		return s.err
	case <-time.After(5 * time.Second):
		t.Fatal("banksim did not stop")
		return nil
	}
}

// startRun runs banksim with args on free loopback ports and reads the URLs
// it prints.
func startRun(t *testing.T, args []string, env map[string]string) *started {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	out, w := io.Pipe()
	s := &started{stop: cancel, exit: make(chan struct{})}
	go func() {
		s.err = run(ctx, args, func(k string) string { return env[k] }, w, io.Discard)
		w.Close()
		close(s.exit)
	}()
	t.Cleanup(func() { _ = s.wait(t) })

	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	timeout := time.After(5 * time.Second)
	for s.admin == "" {
		select {
		case line, ok := <-lines:
			if !ok {
				<-s.exit
				t.Fatalf("banksim exited: %v", s.err)
			}
			if url, ok := strings.CutPrefix(line, "banksim listening on "); ok {
				s.urls = append(s.urls, url)
			} else if url, ok := strings.CutPrefix(line, "banksim admin on "); ok {
				s.admin = url
			} else {
				t.Fatalf("unexpected output %q", line)
			}
		case <-timeout:
			t.Fatal("banksim printed no admin URL")
		}
	}
	go func() {
		for range lines { // drain
		}
	}()
	return s
}

func get(t *testing.T, url, key string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

func TestRun(t *testing.T) {
	s := startRun(t, []string{"--listen", "127.0.0.1:0, 127.0.0.1:0", "--admin", "127.0.0.1:0"},
		map[string]string{"BANKSIM_API_KEY": "sk_from_env"})
	if len(s.urls) != 2 {
		t.Fatalf("listener URLs = %v, want 2", s.urls)
	}
	for _, url := range s.urls {
		if status, body := get(t, url+"/v1/health", "sk_from_env"); status != http.StatusOK {
			t.Errorf("%s health = %d %s", url, status, body)
		}
	}
	if status, _ := get(t, s.urls[0]+"/v1/health", "sk_wrong"); status != http.StatusUnauthorized {
		t.Errorf("wrong key = %d, want 401", status)
	}
	status, body := get(t, s.admin+"/admin/ledger", "")
	var ledger struct {
		Requests map[string]map[string]int64
	}
	if err := json.Unmarshal(body, &ledger); status != http.StatusOK || err != nil {
		t.Fatalf("ledger = %d %s", status, body)
	}
	if n := ledger.Requests[s.urls[1]]["GET /v1/health"]; n != 1 {
		t.Errorf("health calls at the second URL = %d, want 1", n)
	}

	if err := s.wait(t); err != nil {
		t.Errorf("run = %v, want a clean stop", err)
	}
}

func TestRunFaultFlags(t *testing.T) {
	s := startRun(t, []string{"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--api-key", "sk_flag", "--not-processed", "1", "--rate-limit", "100"}, nil)
	if status, body := get(t, s.urls[0]+"/v1/health", "sk_flag"); status != http.StatusServiceUnavailable || !strings.Contains(string(body), "not_processed") {
		t.Errorf("health = %d %s, want 503 not_processed", status, body)
	}
	_, body := get(t, s.admin+"/admin/faults", "")
	if !strings.Contains(string(body), `"not_processed":{`) || !strings.Contains(string(body), `"per_second":100`) {
		t.Errorf("faults = %s", body)
	}
}

func TestRunISO8583(t *testing.T) {
	s := startRun(t, []string{"--protocol", "iso8583", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"}, nil)
	if len(s.urls) != 1 || !strings.HasPrefix(s.urls[0], "tcp://") {
		t.Fatalf("listener URLs = %v, want one tcp:// URL", s.urls)
	}
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(s.urls[0], "tcp://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	terminal := iso8583.Terminal{TerminalID: "SP042001", MerchantID: "store-042"}
	call := func(code string, stan iso8583.STAN) string {
		t.Helper()
		req, err := iso8583.NetworkFields(terminal, code, stan, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		packed, err := req.Pack()
		if err != nil {
			t.Fatal(err)
		}
		frame, _ := iso8583.Frame(packed)
		if _, err := conn.Write(frame); err != nil {
			t.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		raw, err := iso8583.ReadFrame(r)
		if err != nil {
			t.Fatal(err)
		}
		ans, err := iso8583.Unpack(raw)
		if err != nil {
			t.Fatal(err)
		}
		return ans.ResponseCode
	}
	if got := call(iso8583.NetworkSignOn, 1); got != "00" {
		t.Fatalf("sign-on = %s", got)
	}

	body := `{"url":"` + s.urls[0] + `","not_processed":{}}`
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, s.admin+"/admin/faults", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT /admin/faults = %d", resp.StatusCode)
	}
	if got := call(iso8583.NetworkEcho, 2); got != "91" {
		t.Errorf("echo under not_processed = %s, want 91", got)
	}

	_, ledger := get(t, s.admin+"/admin/ledger", "")
	var l struct{ Requests map[string]map[string]int64 }
	if err := json.Unmarshal(ledger, &l); err != nil {
		t.Fatal(err)
	}
	if n := l.Requests[s.urls[0]]["0800"]; n != 2 {
		t.Errorf("0800 calls = %d, want 2 (%s)", n, ledger)
	}
	day := time.Now().UTC().Format(time.DateOnly)
	if status, _ := get(t, s.admin+"/admin/settlement?date="+day, ""); status != http.StatusNotFound {
		t.Errorf("settlement of an open day = %d, want 404", status)
	}
	post, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, s.admin+"/admin/close?date="+day, nil)
	if resp, err := http.DefaultClient.Do(post); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	if status, report := get(t, s.admin+"/admin/settlement?date="+day, ""); status != http.StatusOK || !strings.HasPrefix(string(report), "batch_number,") {
		t.Errorf("settlement = %d %s", status, report)
	}
	if err := s.wait(t); err != nil {
		t.Errorf("run = %v, want a clean stop", err)
	}
}

func TestRunBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--nope"},
		{"--protocol", "soap", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"},
		{"--protocol", "iso8583", "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--rate-limit", "5"},
		{"--listen", "", "--admin", "127.0.0.1:0"},
		{"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--error-rate", "2"},
		{"--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--log-level", "loud"},
	} {
		if err := run(t.Context(), args, func(string) string { return "" }, io.Discard, io.Discard); err == nil {
			t.Errorf("run(%q) = nil, want an error", args)
		}
	}
}
