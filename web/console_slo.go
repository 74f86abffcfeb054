package web

import (
	"net/http"
	"time"

	"storepay/slo"
)

// sloData is the SLO page: the report of a window (the last 24 hours
// unless from and to say otherwise).
type sloData struct {
	From, To string // as the form shows them (RFC 3339)
	Error    string // a window the page could not read
	Report   slo.Report
}

// consoleSLO is GET /console/slo: the same report as `storepay slo`,
// computed from the read pool.
func (s *Server) consoleSLO(w http.ResponseWriter, r *http.Request) {
	now := s.now().UTC()
	to, from := now, now.Add(-24*time.Hour)
	d := sloData{}
	q := r.URL.Query()
	var bad []string
	if v := q.Get("from"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			bad = append(bad, "from")
		} else {
			from = t.UTC()
		}
	}
	if v := q.Get("to"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			bad = append(bad, "to")
		} else {
			to = t.UTC()
		}
	}
	d.From, d.To = from.Format(time.RFC3339), to.Format(time.RFC3339)
	status := http.StatusOK
	if len(bad) > 0 || !to.After(from) {
		d.Error = "The window must be two RFC 3339 times (2026-12-06T08:00:00Z), the end after the start."
		s.render(w, r, http.StatusUnprocessableEntity, "slo", view{Title: "Service level", Nav: "slo", Data: d})
		return
	}
	rep, err := slo.Compute(r.Context(), s.db.Read(), slo.Options{From: from, To: to, Banks: s.router.Banks()})
	if err != nil {
		s.consoleInternal(w, r, err)
		return
	}
	d.Report = rep
	s.render(w, r, status, "slo", view{Title: "Service level", Nav: "slo", Data: d})
}
