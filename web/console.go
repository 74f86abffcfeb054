package web

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

// The manager web console: HTML pages under /console for store managers
// and chain support staff, on a back-office PC or a tablet.
//
// It is a face of the manager API, not a second implementation: every
// action calls the very domain methods the JSON handlers call
// (saf.Queue.Replay, ReplayAll, Hold, Release, SetEStop,
// gateway.Router.Enable and Disable with [Server.audited]), with the
// signed-in manager's device name as the actor, so both paths write the
// same audit log in the same transaction as the change. The console's
// own SQL is limited to its sessions (console_session.go).
//
// Pages are html/template files embedded with go:embed
// (web/console/templates), styled by one plain CSS file; nothing is built.
// The vendored htmx (web/console/static, version in its README) only
// refreshes the live parts of a page by polling the page itself
// (hx-get + hx-select), so every form is a plain HTML form that works
// without JavaScript, and the figures update by themselves when it runs.
// After a form post the browser is redirected (post/redirect/get) with a
// fixed message key, so a reload never repeats an action and no text from
// a URL is shown as a message.
//
// Lists are paginated, 50 rows a page: the queue by offset (its order,
// oldest first, is the order records are owed), payments by keyset
// (newest first), the audit log by sequence number.
//
// Routes, all under /console:
//
//	GET  /console                    dashboard (the sign-in form without a session)
//	GET  /console/login, POST        sign in with a manager token
//	POST /console/logout
//	GET  /console/static/{file}      htmx and the stylesheet, cached a year
//	GET  /console/saf                the queue: filter by status and bank
//	GET  /console/saf/{id}           a record, its attempts, its actions
//	POST /console/saf/{id}/{replay|hold|release}
//	GET  /console/saf/replay-all     confirmation: how many records, how much
//	POST /console/saf/replay-all
//	GET  /console/estop, POST        the emergency stop and its history
//	GET  /console/payments           search by id, last4, terminal, time
//	GET  /console/payments/{id}      a payment and its status history
//	GET  /console/orders/{id}        an order, its payments and their history
//	GET  /console/banks              banks: state, recent attempts
//	POST /console/banks/{name}/{enable|disable}
//	GET  /console/audit              the audit log
//	GET  /console/reconciliation     reconciliation results (see console_reconcile.go)
//	GET  /console/slo                the service level of a window (see console_slo.go)
//
// Sessions and CSRF protection are described in console_session.go.
func (s *Server) console(r chi.Router) {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(s.consoleCrossOrigin))
	r.Route("/console", func(r chi.Router) {
		r.Use(consoleHeaders, cop.Handler)
		r.NotFound(s.consoleNotFound)
		r.Get("/", s.consoleHome)
		r.Get("/static/*", consoleStatic)
		r.Get("/login", s.consoleLoginPage)
		r.Post("/login", s.consoleLogin)
		r.Group(func(r chi.Router) {
			r.Use(s.consoleAuth, s.consoleCSRF)
			r.Post("/logout", s.consoleLogout)
			r.Get("/saf", s.consoleQueue)
			r.Get("/saf/replay-all", s.consoleReplayAllConfirm)
			r.Post("/saf/replay-all", s.consoleReplayAll)
			r.Get("/saf/{id}", s.consoleRecord)
			r.Post("/saf/{id}/{action}", s.consoleRecordAction)
			r.Get("/estop", s.consoleEStop)
			r.Post("/estop", s.consoleSetEStop)
			r.Get("/payments", s.consolePayments)
			r.Get("/payments/{id}", s.consolePayment)
			r.Get("/orders/{id}", s.consoleOrder)
			r.Get("/banks", s.consoleBanks)
			r.Post("/banks/{name}/{action}", s.consoleBankAction)
			r.Get("/audit", s.consoleAudit)
			r.Get("/devices", s.consoleDevices)
			r.Post("/devices/{name}/{action}", s.consoleDeviceAction)
			r.Get("/reconciliation", s.consoleReconciliation)
			r.Get("/slo", s.consoleSLO)
			r.Post("/reconciliation/proposals/{id}/{action}", s.consoleDecideProposal)
		})
	})
}

// consoleHome is the dashboard, or the sign-in form when the browser has
// no session: GET /console always answers a page.
func (s *Server) consoleHome(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("HX-Request") != "" {
		s.consoleAuth(http.HandlerFunc(s.consoleDashboard)).ServeHTTP(w, r)
		return
	}
	d, _, ok, err := s.session(r)
	if err != nil {
		s.consoleInternal(w, r, err)
		return
	}
	if !ok {
		s.renderLogin(w, r, http.StatusOK, "", "")
		return
	}
	ri := info(r)
	ri.Device, ri.Authed = d, true
	s.consoleDashboard(w, r)
}

func (s *Server) consoleNotFound(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusNotFound, "error", view{Title: "Not found", Error: "There is no such page in the console.",
		Data: map[string]string{"Back": "/console", "BackLabel": "Back to the dashboard"}})
}
