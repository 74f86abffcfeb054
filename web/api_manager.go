package web

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

func (s *Server) listGateways(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"data": s.router.Statuses()})
}

func (s *Server) enableGateway(w http.ResponseWriter, r *http.Request) {
	s.gatewayAction(w, r, "gateway.enable", s.router.Enable)
}

func (s *Server) disableGateway(w http.ResponseWriter, r *http.Request) {
	s.gatewayAction(w, r, "gateway.disable", s.router.Disable)
}

func (s *Server) gatewayAction(w http.ResponseWriter, r *http.Request, action string, do func(string) error) {
	name := chi.URLParam(r, "name")
	reason, err := decodeReason(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := do(name); err != nil {
		s.fail(w, r, problem(http.StatusNotFound, "gateway_not_found", "no such gateway"))
		return
	}
	if err := s.audited(r, action, name, reason); err != nil {
		s.fail(w, r, err)
		return
	}
	s.listGateways(w, r)
}
