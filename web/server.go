package web

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"storepay/devices"
	"storepay/gateway"
	"storepay/migrations"
	"storepay/orders"
	"storepay/saf"
)

// Config is what the web layer serves.
type Config struct {
	DB      *migrations.DB
	Orders  *orders.Service
	Devices *devices.Registry
	Router  *gateway.Router
	SAF     *saf.Queue
	// Metrics serves /metrics (the Prometheus exporter's handler).
	Metrics http.Handler
	Log     *slog.Logger
	Now     func() time.Time
	// Undo is who may void, refund or cancel a sale (default
	// UndoOwnTerminal).
	Undo UndoPolicy
}

// Server holds the HTTP handlers.
type Server struct {
	db      *migrations.DB
	orders  *orders.Service
	devices *devices.Registry
	router  *gateway.Router
	saf     *saf.Queue
	metrics http.Handler
	log     *slog.Logger
	nowFn   func() time.Time
	idem    *idemStore
	signins *signinGuard
	undo    UndoPolicy
}

// New builds the server.
func New(c Config) *Server {
	s := &Server{db: c.DB, orders: c.Orders, devices: c.Devices, router: c.Router, saf: c.SAF, metrics: c.Metrics,
		log: c.Log, nowFn: c.Now, idem: newIdemStore(c.DB),
		signins: newSigninGuard(), undo: c.Undo}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.metrics == nil {
		s.metrics = http.NotFoundHandler()
	}
	return s
}

func (s *Server) now() time.Time {
	if s.nowFn != nil {
		return s.nowFn()
	}
	return time.Now()
}

// Handler returns every route storepay serves, registered here top to
// bottom.
func (s *Server) Handler() http.Handler {
	r := chi.NewRouter()
	r.Use(s.requestInfo)
	// otelhttp must be the last r.Use: chi sets the route pattern on the
	// request that otelhttp hands on, which then names spans and metrics.
	r.Use(otelhttp.NewMiddleware("storepay", otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
		if r.Pattern != "" {
			return r.Method + " " + r.Pattern
		}
		return r.Method
	})))
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, r, problem(http.StatusNotFound, "not_found", "no such route"))
	})
	r.MethodNotAllowed(methodNotAllowed(r))

	// Operations: no token.
	r.Get("/healthz", s.healthz)
	r.Get("/readyz", s.readyz)
	r.Method(http.MethodGet, "/metrics", s.metrics)
	r.Get("/openapi.json", s.openapi)

	// The manager console (HTML): its own login and sessions.
	s.console(r)

	r.Group(func(r chi.Router) {
		r.Use(s.authenticate)

		// Terminal API. Every POST is keyed (see idempotency.go); the true
		// marks routes whose domain checks a key against what it made.
		r.Method(http.MethodPost, "/v1/orders", s.idempotent(createdOrder, true, s.createOrder))
		r.Get("/v1/orders/{id}", s.getOrder)
		r.Method(http.MethodPost, "/v1/orders/{id}/deliver", s.idempotent(ok200, false, s.deliverOrder))
		r.Method(http.MethodPost, "/v1/orders/{id}/cancel", s.idempotent(ok200, false, s.cancelOrder))
		r.Method(http.MethodPost, "/v1/orders/{id}/payments", s.idempotent(createdPayment, true, s.createPayment))
		r.Get("/v1/payments", s.listPayments)
		r.Get("/v1/payments/{id}", s.getPayment)
		r.Method(http.MethodPost, "/v1/payments/{id}/capture", s.idempotent(ok200, false, s.capturePayment))
		r.Method(http.MethodPost, "/v1/payments/{id}/void", s.idempotent(ok200, false, s.voidPayment))
		r.Method(http.MethodPost, "/v1/payments/{id}/refunds", s.idempotent(created201, false, s.refundPayment))
		r.Post("/v1/devices/heartbeat", s.deviceHeartbeat)

		// Manager API.
		r.Group(func(r chi.Router) {
			r.Use(s.managerOnly)
			r.Get("/v1/gateways", s.listGateways)
			r.Post("/v1/gateways/{name}/enable", s.enableGateway)
			r.Post("/v1/gateways/{name}/disable", s.disableGateway)
			r.Get("/v1/saf", s.listSAF)
			r.Get("/v1/saf/stats", s.safStats)
			r.Post("/v1/saf/replay", s.replayAllSAF)
			r.Get("/v1/saf/{id}", s.getSAF)
			r.Post("/v1/saf/{id}/replay", s.safAction(s.replaySAF))
			r.Post("/v1/saf/{id}/hold", s.safAction(s.holdSAF))
			r.Post("/v1/saf/{id}/release", s.safAction(s.releaseSAF))
			r.Get("/v1/estop", s.getEStop)
			r.Put("/v1/estop", s.putEStop)
			r.Get("/v1/audit", s.listAudit)
			r.Get("/v1/devices", s.listDevices)
			r.Get("/v1/devices/{name}", s.getDevice)
			r.Post("/v1/devices/{name}/revoke", s.revokeDevice)
			r.Post("/v1/devices/{name}/rename", s.renameDevice)
			r.Get("/v1/reconciliations/{date}", s.getReconciliation)
			r.Post("/v1/reconciliations/proposals/{id}/accept", s.decideProposal(true))
			r.Post("/v1/reconciliations/proposals/{id}/reject", s.decideProposal(false))
		})
	})
	return r
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// faultHold is how long a write the storage refused keeps storepay not
// ready, even when readiness's own small write goes through: on a full
// disk a tiny write can fit (in WAL space already allocated) where a sale
// does not.
const faultHold = 5 * time.Second

// minFreeBytes is the free space below which the database's disk counts
// as full: a few batches of sales and a checkpoint's growth.
const minFreeBytes = 128 << 10

// readyz proves the database takes a durable write, has refused none for
// faultHold, and has room left on its disk.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	err := s.db.Update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO heartbeat (id, at) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET at = excluded.at`,
			migrations.FormatTime(s.now()))
		return err
	})
	free, ferr := s.db.FreeBytes()
	if ferr != nil {
		free = math.MaxUint64 // unknown: the write probe decides
	}
	// The devices are detail, not a condition: storepay takes payments
	// from the terminals that work while one is offline or degraded.
	devs := s.deviceReadiness(ctx)
	if reason := unready(err, s.db.LastStorageFault(), time.Now(), free); reason != "" {
		s.log.Warn("not ready", "reason", reason, "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "unavailable", "reason": reason, "devices": devs})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready", "devices": devs})
}

// unready says why storepay is not ready, or "": the readiness probe's
// write failed (probeErr), the storage refused a write lately (lastFault),
// or the database's disk is (nearly) full.
func unready(probeErr error, lastFault, now time.Time, free uint64) string {
	switch {
	case probeErr != nil:
		return "the database does not take writes"
	case !lastFault.IsZero() && now.Sub(lastFault) < faultHold:
		return "the database refused a write at " + lastFault.UTC().Format(time.RFC3339Nano) + " (disk full or failing?)"
	case free < minFreeBytes:
		return fmt.Sprintf("the database's disk is full: %d bytes free", free)
	}
	return ""
}

// Prune deletes idempotency records past their time to live.
func (s *Server) Prune(ctx context.Context) (int64, error) { return s.idem.prune(ctx, s.now()) }
