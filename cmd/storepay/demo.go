package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"storepay/devices"
	"storepay/gateway/banksim"
	"storepay/orders"
)

// runDemo runs storepay on this machine with nothing set up: a database in
// ./storepay-demo, two simulated banks in this process, an enrolled
// terminal and manager, and an open order to pay.
func runDemo(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "storepay-demo", "`folder` for the demo's database, config and card key")
	listen := fs.String("listen", "127.0.0.1:8080", "`address` to serve on (a free port is used if it is taken)")
	withHQ := fs.Bool("hq", false, "also run headquarters and a second store, linked over NATS JetStream (docs/hq.md)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	dbPath := filepath.Join(*dir, "storepay.db")
	release, err := lockDatabase("demo", dbPath, 1)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, release()) }()
	cardKey, err := demoCardKey(filepath.Join(*dir, "card.key"))
	if err != nil {
		return err
	}

	// Two banks on free loopback ports: bank-a speaks acquirer-json (its
	// API key kept beside the database, so that other commands can reach
	// it), bank-b is an ISO 8583 switch (iso8583-profile.md).
	env := map[string]string{"STOREPAY_CARD_KEY": cardKey}
	keyFile := filepath.Join(*dir, "bank-keys.env")
	bankKeys, err := demoBankKeys(keyFile)
	if err != nil {
		return err
	}
	var gws []GatewayConfig
	var banks, admins []string
	for i, name := range []string{"bank-a", "bank-b"} {
		key := bankKeys[fmt.Sprintf("BANK_%c_KEY", 'A'+i)]
		sim := banksim.New(banksim.Config{APIKey: key, MerchantID: "store-042", Logger: newLogger(io.Discard, "error")})
		defer sim.Close()
		iso := name == "bank-b"
		listen := sim.Listen
		if iso {
			listen = sim.ListenISO8583
		}
		u, err := listen("127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("demo: start %s: %w", name, err)
		}
		admin, err := sim.ListenAdmin("127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("demo: start %s admin: %w", name, err)
		}
		envName := fmt.Sprintf("BANK_%c_KEY", 'A'+i)
		env[envName] = key
		g := GatewayConfig{Name: name, Protocol: "acquirer-json", URLs: []string{u}, MerchantID: "store-042", APIKeyEnv: envName}
		protocol := "acquirer-json"
		if iso {
			g = GatewayConfig{Name: name, Protocol: "iso8583", URLs: []string{u}, MerchantID: "store-042", TerminalID: "SP042001"}
			protocol = "iso8583"
		}
		gws = append(gws, g)
		banks = append(banks, fmt.Sprintf("  %s  %-13s %s  (admin, fault injection: %s)", name, protocol, u, admin))
		admins = append(admins, admin)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return fmt.Errorf("demo: listen: %w", err)
		}
	}
	cfg := Config{StoreID: "store-042", Listen: ln.Addr().String(), Database: dbPath,
		CardKeyEnv: "STOREPAY_CARD_KEY", Gateways: gws,
		Offline: OfflineConfig{FloorLimit: defaultFloorLimit, TotalLimit: defaultTotalLimit, MaxAge: Duration{defaultMaxAge},
			Currency: "USD"}} // the demo sells in USD
	log := newLogger(stderr, "info")
	var chain *demoHQ
	if *withHQ {
		if chain, err = startDemoHQ(ctx, *dir, []string{"store-042", "store-043"}, env, log.With("component", "hq")); err != nil {
			ln.Close()
			return err
		}
		defer chain.close()
		cfg.HQ = chain.block("store-042", filepath.Join(*dir, "nats"))
	}
	if err := writeDemoConfig(filepath.Join(*dir, "storepay.json"), cfg); err != nil {
		return err
	}
	lookup := func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		return getenv(k)
	}
	app, err := OpenApp(ctx, cfg, lookup, log)
	if err != nil {
		ln.Close()
		return err
	}
	demo := devices.Origin{Actor: "demo", From: "storepay demo, enrolling its own devices"}
	terminal, err := app.Devices.EnrollFrom(ctx, "lane-1", devices.RoleTerminal, demo)
	if err != nil {
		app.Close(context.Background())
		return err
	}
	manager, err := app.Devices.EnrollFrom(ctx, "manager", devices.RoleManager, demo)
	if err != nil {
		app.Close(context.Background())
		return err
	}
	order, err := app.Orders.CreateOrder(ctx, orders.NewOrder{Channel: orders.WalkIn, Currency: "USD", TerminalID: "lane-1",
		Lines: []orders.Line{{SKU: "LATTE-L", Description: "Latte large", Quantity: 2, UnitAmount: 450}}})
	if err != nil {
		app.Close(context.Background())
		return err
	}
	app.Start(ln)
	base := app.URL()
	var second *demoSecondStore
	if chain != nil {
		if second, err = startDemoSecondStore(ctx, cfg, *dir, chain, lookup, log); err != nil {
			return errors.Join(err, shutdown(app, cfg, log))
		}
	}
	fmt.Fprintf(stdout, `
storepay demo is running (Ctrl-C stops it).

  API          %[1]s/v1   (OpenAPI: %[1]s/openapi.json)
  console      %[1]s/console
  metrics      %[1]s/metrics
  data         %[2]s

simulated banks:
%[3]s

  terminal token (lane-1):  %[4]s
  manager token:            %[5]s

An open order %[6]s for 9.00 USD is waiting. Pay it by card:

curl -s -X POST %[1]s/v1/orders/%[6]s/payments \
  -H 'Authorization: Bearer %[4]s' \
  -H 'Idempotency-Key: demo-pay-1' -H 'Content-Type: application/json' \
  -d '{"method":"card","amount":900,"tip_amount":0,"capture":true,"card":{"pan":"4242424242424242","exp_month":12,"exp_year":2030}}'

Sell offline: make both banks refuse connections, pay, then bring them back
and watch the console's queue drain:

curl -s -X PUT %[7]s/admin/faults -d '{"refuse":true}'; curl -s -X PUT %[8]s/admin/faults -d '{"refuse":true}'
curl -s -X DELETE %[7]s/admin/faults; curl -s -X DELETE %[8]s/admin/faults

Reconcile today (the banks settle a day once it is closed), beside the
running demo as cron does beside serve; an ISO 8583 switch's report comes
as a file:

curl -s -X POST %[7]s/admin/close; curl -s -X POST %[8]s/admin/close
curl -s "%[8]s/admin/settlement?date=%[11]s" > %[2]s/bank-b-%[11]s.csv
env $(cat %[9]s) go run ./cmd/storepay reconcile --config %[10]s --date %[11]s --settlement bank-b=%[2]s/bank-b-%[11]s.csv

`, base, *dir, strings.Join(banks, "\n"), terminal, manager, order.ID, admins[0], admins[1], keyFile,
		filepath.Join(*dir, "storepay.json"), time.Now().UTC().Format(time.DateOnly))
	if second != nil {
		fmt.Fprint(stdout, demoHQText(chain, second))
	}
	<-ctx.Done()
	if second != nil {
		err = shutdown(second.app, second.cfg, log)
	}
	return errors.Join(err, shutdown(app, cfg, log))
}

// demoCardKey keeps the demo's card key beside its database, so that a
// second run can still open what the first one sealed.
func demoCardKey(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("demo: card key: %w", err)
	}
	key := randomHex(32)
	if err := os.WriteFile(path, []byte(key+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("demo: card key: %w", err)
	}
	return key, nil
}

// demoBankKeys reads the demo banks' API keys, making them on the first
// run, as an env file: NAME=value lines.
func demoBankKeys(path string) (map[string]string, error) {
	keys := map[string]string{}
	if b, err := os.ReadFile(path); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(strings.TrimSpace(line), "="); ok {
				keys[k] = v
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("demo: bank keys: %w", err)
	}
	if keys["BANK_A_KEY"] != "" && keys["BANK_B_KEY"] != "" {
		return keys, nil
	}
	keys = map[string]string{"BANK_A_KEY": randomHex(16), "BANK_B_KEY": randomHex(16)}
	content := "BANK_A_KEY=" + keys["BANK_A_KEY"] + "\nBANK_B_KEY=" + keys["BANK_B_KEY"] + "\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		return nil, fmt.Errorf("demo: bank keys: %w", err)
	}
	return keys, nil
}

func writeDemoConfig(path string, cfg Config) error {
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
