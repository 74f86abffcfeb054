package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"storepay/devices"
	"storepay/gateway"
	"storepay/gateway/acquirer"
	"storepay/hq"
	"storepay/migrations"
	"storepay/orders"
	"storepay/saf"
	"storepay/slo"
	"storepay/web"
)

// App is one running storepay: the database, the banks, the services and
// the HTTP server, wired together. Tests start it on 127.0.0.1:0.
type App struct {
	Config  Config
	Log     *slog.Logger
	DB      *migrations.DB
	Router  *gateway.Router
	Orders  *orders.Service
	Devices *devices.Registry
	SAF     *saf.Queue
	Web     *web.Server
	SLO     *slo.Recorder
	// HQ is the link to headquarters; nil without an hq block.
	HQ *hq.Link

	server *http.Server
	sloOff func() // unregisters the SLO gauges
	ln     net.Listener
	iso    *isoLinks
	cancel context.CancelFunc
	wg     sync.WaitGroup
	// unobserve unregisters the device gauges.
	unobserve func() error
}

// OpenApp opens the database (applying migrations), checks every secret
// the config names, and builds the services. Nothing runs until Start.
func OpenApp(ctx context.Context, cfg Config, getenv func(string) string, log *slog.Logger) (*App, error) {
	// Every line logged with a request's context names the request.
	log = slog.New(web.RequestIDHandler(log.Handler()))
	rawKey := getenv(cfg.CardKeyEnv)
	if rawKey == "" {
		return nil, fmt.Errorf("config: card_key_env: environment variable %s is not set; it must hold 64 hex digits (make one with: openssl rand -hex 32)", cfg.CardKeyEnv)
	}
	key, err := gateway.ParseCardKey(rawKey)
	if err != nil {
		return nil, fmt.Errorf("config: card_key_env: environment variable %s: %w", cfg.CardKeyEnv, err)
	}
	vault, err := gateway.NewVault(key)
	if err != nil {
		return nil, fmt.Errorf("card key: %w", err)
	}
	metrics, err := setupTelemetry(getenv)
	if err != nil {
		return nil, err
	}
	db, err := migrations.Open(ctx, cfg.Database)
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", cfg.Database, err)
	}
	iso := &isoLinks{}
	router, err := buildRouter(cfg, getenv, log, func(g GatewayConfig) ([]gateway.Endpoint, error) {
		return iso.isoEndpoints(g, db, vault, log)
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	a := &App{Config: cfg, Log: log, DB: db, Router: router, iso: iso}
	a.SLO = &slo.Recorder{DB: db, Log: log}
	router.OnStateChange(a.SLO.Gateway)
	a.Devices = &devices.Registry{DB: db}
	a.Orders = &orders.Service{DB: db, Bank: router, Vault: vault, Log: log, AuthBudget: cfg.PaymentBudget.Duration}
	a.SAF = &saf.Queue{DB: db, Vault: vault, Bank: router, Payments: a.Orders, Rules: cfg.safRules(),
		Forward: cfg.forwardPolicy(), Log: log}
	a.Orders.Offline = a.SAF
	if err := web.RestoreDisabledGateways(ctx, db, router); err != nil {
		db.Close()
		return nil, err
	}
	banks := make([]string, 0, len(cfg.Gateways))
	for _, g := range cfg.Gateways {
		banks = append(banks, g.Name)
	}
	if a.sloOff, err = slo.Watch(db.Read(), banks, nil); err != nil {
		db.Close()
		return nil, err
	}
	a.Web = web.New(web.Config{DB: db, Orders: a.Orders, Devices: a.Devices, Router: router, SAF: a.SAF, Metrics: metrics, Log: log,
		Undo: web.UndoPolicy(cfg.UndoPolicy)})
	if err := a.openHQ(ctx, getenv); err != nil {
		db.Close()
		return nil, err
	}
	return a, nil
}

var (
	_ orders.Bank    = (*gateway.Router)(nil)
	_ saf.Bank       = (*gateway.Router)(nil)
	_ saf.Payments   = (*orders.Service)(nil)
	_ orders.Offline = (*saf.Queue)(nil)
)

// buildRouter makes the bank router of the config: one acquirer-json
// client per URL, every bank behind its policies. Each bank's API key must
// be in the environment variable its config names. An iso8583 gateway's
// endpoints come from iso (nil: such a gateway is an error).
func buildRouter(cfg Config, getenv func(string) string, log *slog.Logger, iso func(GatewayConfig) ([]gateway.Endpoint, error)) (*gateway.Router, error) {
	httpClient := acquirer.NewHTTPClient()
	httpClient.Transport = otelhttp.NewTransport(httpClient.Transport)
	var specs []gateway.BankSpec
	for i, g := range cfg.Gateways {
		if g.Protocol == protocolISO {
			if iso == nil {
				return nil, fmt.Errorf("config: gateways[%d]: %s speaks iso8583, which this command cannot reach", i, g.Name)
			}
			eps, err := iso(g)
			if err != nil {
				return nil, fmt.Errorf("config: gateways[%d]: %w", i, err)
			}
			specs = append(specs, gateway.BankSpec{Name: g.Name, Policy: g.policy(), Endpoints: eps})
			continue
		}
		apiKey := getenv(g.APIKeyEnv)
		if apiKey == "" {
			return nil, fmt.Errorf("config: gateways[%d].api_key_env: environment variable %s is not set", i, g.APIKeyEnv)
		}
		spec := gateway.BankSpec{Name: g.Name, Policy: g.policy()}
		for _, u := range g.URLs {
			spec.Endpoints = append(spec.Endpoints, acquirer.New(acquirer.Config{BaseURL: u, APIKey: apiKey,
				MerchantID: g.MerchantID, Gateway: g.Name, HTTPClient: httpClient}))
		}
		specs = append(specs, spec)
	}
	router, err := gateway.NewRouter(specs, log)
	if err != nil {
		return nil, fmt.Errorf("config: gateways: %w", err)
	}
	return router, nil
}

// Start serves HTTP on ln and starts the background work: bank health
// probes, the resolver of unresolved payments (its first pass is the
// recovery pass after a crash), and the pruning of idempotency records.
func (a *App) Start(ln net.Listener) {
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel, a.ln = cancel, ln
	if err := a.iso.open(); err != nil {
		a.Log.Error("iso8583 gateways did not start", "err", err)
	}
	if err := a.SLO.Open(ctx); err != nil {
		a.Log.Error("availability recorder did not start", "err", err)
	}
	a.Router.Start()
	if a.HQ != nil {
		// Never blocks on headquarters: the leaf link dials in the
		// background; only the local server must start.
		if err := a.HQ.Open(); err != nil {
			a.Log.Error("headquarters link did not start; events wait in the outbox", "err", err)
			a.HQ = nil
		}
	}
	if err := a.SAF.Open(); err != nil {
		a.Log.Error("store-and-forward forwarder did not start", "err", err)
	}
	if unobserve, err := a.Devices.Observe(); err != nil {
		a.Log.Error("device metrics did not start", "err", err)
	} else {
		a.unobserve = unobserve
	}
	resolveEvery := a.Config.ResolveInterval.Duration
	if resolveEvery <= 0 {
		resolveEvery = 5 * time.Second
	}
	a.wg.Add(2)
	go func() {
		defer a.wg.Done()
		a.Orders.RunResolver(ctx, resolveEvery)
	}()
	go func() {
		defer a.wg.Done()
		a.prune(ctx)
	}()
	a.server = &http.Server{Handler: a.Web.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second,
		ErrorLog: slog.NewLogLogger(a.Log.Handler(), slog.LevelWarn)}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		// web's Listener answers what net/http refuses before any handler
		// (a header with a control byte, ...) as problem+json too.
		if err := a.server.Serve(a.Web.Listener(ln)); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.Log.Error("http server stopped", "err", err)
		}
	}()
	a.Log.Info("storepay serving", "store_id", a.Config.StoreID, "addr", ln.Addr().String(),
		"gateways", strings.Join(a.Router.Banks(), ","))
}

// URL is the base URL the app serves on.
func (a *App) URL() string { return "http://" + a.ln.Addr().String() }

func (a *App) prune(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if n, err := a.Web.Prune(ctx); err != nil && ctx.Err() == nil {
			a.Log.Warn("prune idempotency records", "err", err)
		} else if n > 0 {
			a.Log.Info("pruned idempotency records", "count", n)
		}
		if n, err := a.iso.purge(ctx); err != nil && ctx.Err() == nil {
			a.Log.Warn("purge old iso8583 records", "err", err)
		} else if n > 0 {
			a.Log.Info("purged old iso8583 records and their sealed cards", "count", n)
		}
		if n, err := a.Web.PurgeSessions(ctx); err != nil && ctx.Err() == nil {
			a.Log.Warn("purge expired console sessions", "err", err)
		} else if n > 0 {
			a.Log.Info("purged expired console sessions", "count", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Close stops taking requests, lets the ones in flight (payments
// included) finish within ctx, stops the background work and closes the
// database.
func (a *App) Close(ctx context.Context) error {
	var errs []error
	if a.server != nil {
		if err := a.server.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("drain requests: %w", err))
		}
	}
	if a.cancel != nil {
		a.cancel()
	}
	a.wg.Wait()
	if a.HQ != nil {
		a.HQ.Close()
	}
	if a.unobserve != nil {
		a.unobserve()
	}
	a.SAF.Close()
	a.Router.Close()
	if err := a.SLO.Close(ctx); err != nil {
		errs = append(errs, err)
	}
	if a.sloOff != nil {
		a.sloOff()
	}
	if err := a.iso.close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("iso8583 gateways: %w", err))
	}
	if err := a.DB.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// openHQ turns the outbox on or off to match the config and prepares the
// link to headquarters (started by Start).
func (a *App) openHQ(ctx context.Context, getenv func(string) string) error {
	c := a.Config.HQ
	if err := hq.Enable(ctx, a.DB, c != nil); err != nil {
		return fmt.Errorf("hq outbox: %w", err)
	}
	if c == nil {
		return nil
	}
	user, password, err := hq.ParseCredentials(getenv(c.CredentialsEnv))
	if err != nil {
		return fmt.Errorf("config: hq.credentials_env: environment variable %s: %w", c.CredentialsEnv, err)
	}
	a.HQ = &hq.Link{DB: a.DB, EStop: a.SAF, Gateways: a.Router, Log: a.Log, Config: hq.LinkConfig{
		StoreID: a.Config.StoreID, URLs: c.URLs, User: user, Password: password, DataDir: c.DataDir,
		MaxAge: c.Retention.Duration, MaxBytes: c.MaxBytes, SAFMaxAge: a.Config.Offline.MaxAge.Duration}}
	// Headquarters sees each bank's live state: now, and at each change.
	for _, s := range a.Router.Statuses() {
		a.HQ.GatewayState(s.Name, "", s.State)
	}
	a.Router.OnStateChange(a.HQ.GatewayState)
	return nil
}
