package web

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

func (s *Server) listGateways(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"data": s.router.Statuses()})
}

func (s *Server) enableGateway(w http.ResponseWriter, r *http.Request) {
	s.gatewayAction(w, r, true)
}

func (s *Server) disableGateway(w http.ResponseWriter, r *http.Request) {
	s.gatewayAction(w, r, false)
}

func (s *Server) gatewayAction(w http.ResponseWriter, r *http.Request, enable bool) {
	reason, err := decodeReason(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.setGateway(r, chi.URLParam(r, "name"), enable, reason); err != nil {
		s.fail(w, r, err)
		return
	}
	s.listGateways(w, r)
}
