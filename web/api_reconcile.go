package web

import (
	"errors"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"storepay/reconcile"
)

// getReconciliation answers GET /v1/reconciliations/{date} (manager): the
// last run of the nightly reconciliation of that business date. Errors:
// 400 invalid_date for a date that is not YYYY-MM-DD; 404
// reconciliation_not_found when the date was never reconciled.
func (s *Server) getReconciliation(w http.ResponseWriter, r *http.Request) {
	date := chi.URLParam(r, "date")
	if d, err := time.Parse(time.DateOnly, date); err != nil || d.Format(time.DateOnly) != date {
		writeProblem(w, r, problem(http.StatusBadRequest, "invalid_date", "the date must be a business date written YYYY-MM-DD"))
		return
	}
	rep, err := reconcile.Last(r.Context(), s.db, date)
	if errors.Is(err, reconcile.ErrNotFound) {
		writeProblem(w, r, problem(http.StatusNotFound, "reconciliation_not_found",
			"no reconciliation has run for "+date+": run storepay reconcile --date "+date))
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}
