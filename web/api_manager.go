package web

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

func (s *Server) listGateways(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"data": s.router.Statuses()})
}

func (s *Server) enableGateway(w http.ResponseWriter, r *http.Request) {
	if err := s.router.Enable(chi.URLParam(r, "name")); err != nil {
		s.fail(w, r, problem(http.StatusNotFound, "gateway_not_found", "no such gateway"))
		return
	}
	s.log.Info("manager enabled gateway", "gateway", chi.URLParam(r, "name"), "device", info(r).Device.Name)
	s.listGateways(w, r)
}

func (s *Server) disableGateway(w http.ResponseWriter, r *http.Request) {
	if err := s.router.Disable(chi.URLParam(r, "name")); err != nil {
		s.fail(w, r, problem(http.StatusNotFound, "gateway_not_found", "no such gateway"))
		return
	}
	s.log.Warn("manager disabled gateway", "gateway", chi.URLParam(r, "name"), "device", info(r).Device.Name)
	s.listGateways(w, r)
}
