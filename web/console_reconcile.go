package web

import "net/http"

// consoleReconciliation is the seam for the nightly reconciliation's
// results. Until package reconcile offers a way to read a business date's
// last run, the page says so; when it lands, this handler reads that run
// and the reconciliation template shows its summary and items by
// category.
func (s *Server) consoleReconciliation(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, http.StatusOK, "reconciliation", view{Title: "Reconciliation", Nav: "reconciliation"})
}
