package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"storepay/devices"
	"storepay/hq"
)

// demoHQ is headquarters as `storepay demo --hq` runs it: the hub, its
// API and console on a free loopback port, and one API token.
type demoHQ struct {
	hub   *hq.Hub
	srv   *http.Server
	url   string
	token string
}

// startDemoHQ starts headquarters for the given stores, each with a new
// random leaf password, which it puts in env under the variable the
// store's hq block names.
func startDemoHQ(ctx context.Context, dir string, stores []string, env map[string]string, log *slog.Logger) (*demoHQ, error) {
	hc := hq.HubConfig{LeafListen: "127.0.0.1:0", DataDir: filepath.Join(dir, "hq-nats")}
	for _, id := range stores {
		pw := randomHex(16)
		hc.Stores = append(hc.Stores, hq.HubStore{ID: id, Password: pw})
		env[demoHQCredsEnv(id)] = id + ":" + pw
	}
	db, err := hq.OpenHubDB(ctx, filepath.Join(dir, "hq.db"))
	if err != nil {
		return nil, fmt.Errorf("demo: headquarters database: %w", err)
	}
	hub := &hq.Hub{Config: hc, DB: db, Log: log}
	if err := hub.Open(); err != nil {
		db.Close()
		return nil, fmt.Errorf("demo: headquarters: %w", err)
	}
	d := &demoHQ{hub: hub}
	if d.token, err = hq.Enroll(ctx, db, "demo"); err != nil {
		d.close()
		return nil, fmt.Errorf("demo: headquarters token: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		d.close()
		return nil, fmt.Errorf("demo: headquarters listen: %w", err)
	}
	d.srv = &http.Server{Handler: hub.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go d.srv.Serve(ln)
	d.url = "http://" + ln.Addr().String()
	return d, nil
}

func (d *demoHQ) close() {
	if d.srv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		d.srv.Shutdown(ctx)
		cancel()
	}
	d.hub.Close()
	d.hub.DB.Close()
}

// block is a store's hq config block for this headquarters.
func (d *demoHQ) block(id, natsDir string) *HQConfig {
	return &HQConfig{URLs: []string{"nats-leaf://" + d.hub.LeafAddr()}, CredentialsEnv: demoHQCredsEnv(id), DataDir: natsDir}
}

func demoHQCredsEnv(id string) string {
	return "STOREPAY_HQ_CREDS_" + strings.ToUpper(strings.NewReplacer("-", "_").Replace(id))
}

// demoSecondStore is the second store of `demo --hq`: its own database,
// port and tokens, the same banks (its own ISO 8583 terminal id).
type demoSecondStore struct {
	app               *App
	cfg               Config
	terminal, manager string
}

func startDemoSecondStore(ctx context.Context, first Config, dir string, d *demoHQ, lookup func(string) string, log *slog.Logger) (*demoSecondStore, error) {
	const id = "store-043"
	sdir := filepath.Join(dir, id)
	cfg := first
	cfg.StoreID = id
	cfg.Database = filepath.Join(sdir, "storepay.db")
	cfg.HQ = d.block(id, filepath.Join(sdir, "nats"))
	cfg.Gateways = append([]GatewayConfig(nil), first.Gateways...)
	for i := range cfg.Gateways {
		if cfg.Gateways[i].TerminalID != "" {
			cfg.Gateways[i].TerminalID = "SP043001" // a switch keys STANs by terminal
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo: %s listen: %w", id, err)
	}
	cfg.Listen = ln.Addr().String()
	if err := os.MkdirAll(sdir, 0o700); err != nil {
		ln.Close()
		return nil, fmt.Errorf("demo: %w", err)
	}
	if err := writeDemoConfig(filepath.Join(sdir, "storepay.json"), cfg); err != nil {
		ln.Close()
		return nil, err
	}
	app, err := OpenApp(ctx, cfg, lookup, log.With("store", id))
	if err != nil {
		ln.Close()
		return nil, err
	}
	s := &demoSecondStore{app: app, cfg: cfg}
	if s.terminal, err = app.Devices.Enroll(ctx, "lane-1", devices.RoleTerminal); err == nil {
		s.manager, err = app.Devices.Enroll(ctx, "manager", devices.RoleManager)
	}
	if err != nil {
		ln.Close()
		return nil, errors.Join(err, app.Close(context.Background()))
	}
	app.Start(ln)
	return s, nil
}

// demoHQText is what `demo --hq` prints after the store's own text.
func demoHQText(d *demoHQ, second *demoSecondStore) string {
	return fmt.Sprintf(`
Headquarters (--hq) links this store (store-042) and a second one
(store-043) over NATS JetStream leaf nodes:

  headquarters API   %[1]s/v1   (OpenAPI: %[1]s/openapi.json)
  its console        %[1]s/console   (sign in with the token)
  its token          %[2]s
  store-043          %[3]s/v1   terminal token %[4]s
                                     manager token  %[5]s

See every store, and the chain's offline exposure:

curl -s %[1]s/v1/stores -H 'Authorization: Bearer %[2]s'
curl -s %[1]s/v1/exposure -H 'Authorization: Bearer %[2]s'

Pause forwarding chain-wide (store-042's GET /v1/estop then names
headquarters), follow the command, and lift it:

curl -s -X PUT %[1]s/v1/estop -H 'Authorization: Bearer %[2]s' -d '{"state":"pause","reason":"incident drill"}'
curl -s %[1]s/v1/commands/ID -H 'Authorization: Bearer %[2]s'
curl -s -X PUT %[1]s/v1/estop -H 'Authorization: Bearer %[2]s' -d '{"state":"go","reason":"drill over"}'

Put a stolen card on every store's hot list (refused offline at once):

curl -s -X POST %[1]s/v1/hot-cards -H 'Authorization: Bearer %[2]s' -d '{"card":"424242******4242","action":"add","reason":"reported stolen"}'

Each store's events wait in its own JetStream while headquarters is away;
selling never waits for it (docs/hq.md).
`, d.url, d.token, second.app.URL(), second.terminal, second.manager)
}
