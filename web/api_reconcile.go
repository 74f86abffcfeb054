package web

import (
	"errors"
	"net/http"
	"strconv"
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

// decideProposal answers POST /v1/reconciliations/proposals/{id}/accept
// and .../reject (manager): records the manager's decision on a proposed
// resolution, with an optional {"reason"}, in the audit log. It performs
// nothing. Errors: 400 invalid_request; 404 proposal_not_found; 409
// proposal_decided (already decided, or withdrawn by a later run).
func (s *Server) decideProposal(accept bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
		if err != nil || id <= 0 {
			writeProblem(w, r, problem(http.StatusBadRequest, "invalid_request", "a proposal id is a positive integer"))
			return
		}
		reason, err := decodeReason(w, r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		if err := s.decide(r, id, accept, reason); err != nil {
			s.fail(w, r, err)
			return
		}
		status := reconcile.Rejected
		if accept {
			status = reconcile.Accepted
		}
		writeJSON(w, http.StatusOK, map[string]any{"id": id, "status": status, "decided_by": info(r).Device.Name})
	}
}

// decide is the one path, for the API and the console, that records a
// decision on a proposal.
func (s *Server) decide(r *http.Request, id int64, accept bool, reason string) error {
	err := reconcile.Decide(r.Context(), s.db, id, accept, info(r).Device.Name, reason, s.now())
	switch {
	case errors.Is(err, reconcile.ErrNotFound):
		return problem(http.StatusNotFound, "proposal_not_found", "there is no proposal "+strconv.FormatInt(id, 10))
	case errors.Is(err, reconcile.ErrDecided):
		return problem(http.StatusConflict, "proposal_decided", "this proposal was already decided, or withdrawn by a later run")
	}
	return err
}
