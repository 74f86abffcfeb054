package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const goodConfig = `{
  "store_id": "store-042",
  "listen": "127.0.0.1:8080",
  "database": "DB",
  "card_key_env": "STOREPAY_CARD_KEY",
  "gateways": [
    {"name": "bank-a", "protocol": "acquirer-json",
     "urls": ["http://127.0.0.1:9101", "http://127.0.0.1:9102"],
     "merchant_id": "store-042", "api_key_env": "BANK_A_KEY"},
    {"name": "bank-b", "protocol": "acquirer-json",
     "urls": ["http://127.0.0.1:9201"],
     "merchant_id": "store-042", "api_key_env": "BANK_B_KEY"}
  ],
  "offline": {"floor_limit": 10000, "total_limit": 500000, "max_age": "72h"}
}`

func TestParseConfigContractExample(t *testing.T) {
	c, err := ParseConfig([]byte(goodConfig))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Gateways) != 2 || c.Gateways[0].URLs[1] != "http://127.0.0.1:9102" || c.Offline.MaxAge.Hours() != 72 || c.Offline.FloorLimit != 10000 {
		t.Fatalf("parsed %+v", c)
	}
}

func TestParseConfigDefaults(t *testing.T) {
	c, err := ParseConfig([]byte(`{"store_id":"s","listen":":1","database":"d","gateways":[{"name":"a","protocol":"acquirer-json","urls":["http://x"],"merchant_id":"m","api_key_env":"K"}],"offline":{"floor_limit":500}}`))
	if err != nil {
		t.Fatal(err)
	}
	if c.CardKeyEnv != "STOREPAY_CARD_KEY" || c.Offline.FloorLimit != 500 || c.Offline.TotalLimit != defaultTotalLimit || c.Offline.MaxAge.Duration != defaultMaxAge {
		t.Fatalf("defaults: %+v", c)
	}
}

// Every bad config names the key at fault.
func TestParseConfigErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ name, from, to, key string }{
		{"UnknownKey", `"listen"`, `"listne": "x", "listen"`, "listne"},
		{"BadUndoPolicy", `"listen"`, `"undo_policy": "anyone", "listen"`, "undo_policy"},
		{"UnknownNestedKey", `"merchant_id": "store-042", "api_key_env": "BANK_B_KEY"`, `"merchant_id": "store-042", "api_key_env": "BANK_B_KEY", "urlz": 1`, "gateways[1].urlz"},
		{"UnknownOfflineKey", `"max_age": "72h"`, `"max_age": "72h", "extra": true`, "offline.extra"},
		{"MissingStore", `"store_id": "store-042",`, ``, "store_id"},
		{"MissingGateways", `"gateways": [`, `"gatewayz": [`, "gateway"},
		{"WrongType", `"floor_limit": 10000`, `"floor_limit": "lots"`, "floor_limit"},
		{"BadDuration", `"72h"`, `"3 days"`, "max_age"},
		{"DurationNotAString", `"72h"`, `3600`, "offline.max_age"},
		{"BadURL", `"http://127.0.0.1:9201"`, `"ftp://x"`, "gateways[1].urls[0]"},
		{"BadProtocol", `"protocol": "acquirer-json",
     "urls": ["http://127.0.0.1:9201"]`, `"protocol": "visanet-xml",
     "urls": ["http://127.0.0.1:9201"]`, "gateways[1].protocol"},
		{"ISOWithoutTerminalID", `"protocol": "acquirer-json",
     "urls": ["http://127.0.0.1:9201"]`, `"protocol": "iso8583",
     "urls": ["tcp://127.0.0.1:9201"]`, "gateways[1].terminal_id"},
		{"ISOWithHTTPURL", `"protocol": "acquirer-json",
     "urls": ["http://127.0.0.1:9201"]`, `"protocol": "iso8583", "terminal_id": "SP042001",
     "urls": ["http://127.0.0.1:9201"]`, "gateways[1].urls[0]"},
		{"TerminalIDOnJSON", `"protocol": "acquirer-json",
     "urls": ["http://127.0.0.1:9201"]`, `"protocol": "acquirer-json", "terminal_id": "SP042001",
     "urls": ["http://127.0.0.1:9201"]`, "gateways[1].terminal_id"},
		{"DuplicateGateway", `"name": "bank-b"`, `"name": "bank-a"`, "gateways[1].name"},
		{"NegativeLimit", `"total_limit": 500000`, `"total_limit": -1`, "offline.total_limit"},
		{"UnknownLimitCurrency", `"max_age": "72h"`, `"max_age": "72h", "currency": "usd"`, "offline.currency"},
		{"BadListen", `"127.0.0.1:8080"`, `"everywhere"`, "listen"},
		{"ListenPortOutOfRange", `"127.0.0.1:8080"`, `"127.0.0.1:99999"`, "listen"},
		{"ListenNamedPort", `"127.0.0.1:8080"`, `"127.0.0.1:http-alt"`, "listen"},
		{"ListenBadIP", `"127.0.0.1:8080"`, `"999.1.1.1:80"`, "listen"},
		{"KeyInAnotherCase", `"offline":`, `"Offline":`, "Offline"},
		{"NestedKeyInAnotherCase", `"floor_limit"`, `"Floor_Limit"`, "offline.Floor_Limit"},
		{"GatewayKeyInAnotherCase", `"urls": ["http://127.0.0.1:9201"]`, `"URLS": ["http://127.0.0.1:9201"]`, "gateways[1].URLS"},
		{"NoURLs", `"urls": ["http://127.0.0.1:9201"]`, `"urls": []`, "gateways[1].urls"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := strings.Replace(goodConfig, tc.from, tc.to, 1)
			if bad == goodConfig {
				t.Fatal("test did not change the config")
			}
			_, err := ParseConfig([]byte(bad))
			if err == nil {
				t.Fatal("bad config accepted")
			}
			if !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("error %q does not name %q", err, tc.key)
			}
		})
	}
}

func writeConfig(t *testing.T, db string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "storepay.json")
	if err := os.WriteFile(path, []byte(strings.Replace(goodConfig, `"DB"`, `"`+db+`"`, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCommands(t *testing.T) {
	db := filepath.Join(t.TempDir(), "sp.db")
	cfg := writeConfig(t, db)
	getenv := func(string) string { return "" }
	var out, errb bytes.Buffer
	code := func(args ...string) int {
		out.Reset()
		errb.Reset()
		return exitCode(run(context.Background(), args, getenv, &out, &errb), &errb)
	}
	if c := code("migrate", "--config", cfg); c != 0 {
		t.Fatalf("migrate: exit %d: %s", c, errb.String())
	}
	if c := code("devices", "enroll", "--config", cfg, "--name", "lane-3", "--role", "terminal"); c != 0 {
		t.Fatalf("enroll: exit %d: %s", c, errb.String())
	}
	if lines := strings.Split(strings.TrimRight(out.String(), "\n"), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "sp_") {
		t.Fatalf("enroll must print only the token: %q", out.String())
	}
	if c := code("devices", "enroll", "--config", cfg, "--name", "x", "--role", "admin"); c != 1 {
		t.Fatalf("enroll with a bad role: exit %d", c)
	}
	if c := code("migrate", "--config", filepath.Join(t.TempDir(), "missing.json")); c != 1 {
		t.Fatalf("migrate with no config file: exit %d", c)
	}
	// serve refuses to start without its secrets, and says which.
	if c := code("serve", "--config", cfg); c == 0 || !strings.Contains(errb.String(), "STOREPAY_CARD_KEY") {
		t.Fatalf("serve without card key: exit %d: %s", c, errb.String())
	}
	getenv = func(k string) string {
		if k == "STOREPAY_CARD_KEY" {
			return "not-hex"
		}
		return ""
	}
	if c := code("serve", "--config", cfg); c == 0 || !strings.Contains(errb.String(), "64 hex digits") {
		t.Fatalf("serve with a malformed card key: exit %d: %s", c, errb.String())
	}
	getenv = func(k string) string {
		if k == "STOREPAY_CARD_KEY" {
			return testCardKey
		}
		return ""
	}
	if c := code("serve", "--config", cfg); c == 0 || !strings.Contains(errb.String(), "BANK_A_KEY") {
		t.Fatalf("serve without a bank key: exit %d: %s", c, errb.String())
	}
	// migrate and devices enroll have two exits: 0 ok, 1 failed.
	for _, args := range [][]string{
		{"migrate"},
		{"migrate", "--config", cfg, "stray"},
		{"devices", "enroll", "--config", cfg, "--name", "x"},
		{"devices", "enroll", "--name", "x", "--role", "terminal"},
		{"devices", "list"},
	} {
		if c := code(args...); c != 1 {
			t.Errorf("%q: exit %d, want 1", args, c)
		}
	}
	if c := code("frobnicate"); c != 2 {
		t.Fatalf("unknown command: exit %d", c)
	}
}

// serve stops cleanly (exit 0) on a signal.
func TestServeStopsCleanly(t *testing.T) {
	b := startBank(t, "bank-a", 1)
	db := filepath.Join(t.TempDir(), "sp.db")
	cfgText := strings.Replace(goodConfig, `"DB"`, `"`+db+`"`, 1)
	cfgText = strings.Replace(cfgText, `"127.0.0.1:8080"`, `"127.0.0.1:0"`, 1)
	cfgText = strings.Replace(cfgText, `"http://127.0.0.1:9101", "http://127.0.0.1:9102"`, `"`+b.urls[0]+`"`, 1)
	path := filepath.Join(t.TempDir(), "c.json")
	os.WriteFile(path, []byte(cfgText), 0o600)
	env := map[string]string{"STOREPAY_CARD_KEY": testCardKey, "BANK_A_KEY": b.key, "BANK_B_KEY": "x"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	var out, errb lockedBuffer
	go func() {
		done <- run(ctx, []string{"serve", "--config", path}, func(k string) string { return env[k] }, &out, &errb)
	}()
	waitFor(t, "serve to start", 10*time.Second, func() bool { return strings.Contains(errb.String(), "storepay serving") })
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve: %v", err)
	}
}

// lockedBuffer is a buffer that a server's logger and a test may share.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
