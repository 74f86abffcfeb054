package web

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"storepay/reconcile"
)

// recentNights is how many reconciled dates the page lists.
const recentNights = 14

type reconGroup struct {
	Category reconcile.Category
	Totals   reconcile.CategoryTotals
	Items    []reconcile.Item
	Count    int
	// More links to the category's own paginated list when this group
	// shows only its first page.
	More string
}

type reconData struct {
	Date   string
	Nights []reconcile.Night
	Report *reconcile.Report
	NotRun bool
	// Totals has every category, for the summary; Groups the ones whose
	// items are listed.
	Totals   []reconGroup
	Groups   []reconGroup
	Category string // set when one category is listed page by page
	Page     int
	Pages    int
	PageURL  func(int) string
}

// consoleReconciliation shows the nightly reconciliation: the recent
// nights, and for the chosen business date the last run's summary (each
// bank's totals, each category's count and money), the rows a bank's
// report had that could not be read, and the items by category. Each
// category shows its first 50 items; its own list pages through the rest
// (a night can match thousands). It reads what `storepay reconcile`
// saved through reconcile.Last, the call GET /v1/reconciliations/{date}
// makes; it changes nothing.
func (s *Server) consoleReconciliation(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d := reconData{Date: q.Get("date"), Category: q.Get("category"), Page: pageNumber(r)}
	nights, err := reconcile.Nights(r.Context(), s.db, recentNights)
	if err != nil {
		s.consoleInternal(w, r, err)
		return
	}
	d.Nights = nights
	if d.Date == "" {
		if len(nights) > 0 {
			d.Date = nights[0].Date
		} else {
			d.Date = s.now().Local().AddDate(0, 0, -1).Format(time.DateOnly)
		}
	}
	if t, err := time.Parse(time.DateOnly, d.Date); err != nil || t.Format(time.DateOnly) != d.Date {
		s.consoleFail(w, r, problem(http.StatusBadRequest, "invalid_date", "A business date is written YYYY-MM-DD."),
			"/console/reconciliation", "Back to reconciliation")
		return
	}
	rep, err := reconcile.Last(r.Context(), s.db, d.Date)
	switch {
	case errors.Is(err, reconcile.ErrNotFound):
		d.NotRun = true
		s.render(w, r, http.StatusOK, "reconciliation", view{Title: "Reconciliation", Nav: "reconciliation", Data: d})
		return
	case err != nil:
		s.consoleInternal(w, r, err)
		return
	}
	d.Report = &rep
	byCat := map[reconcile.Category][]reconcile.Item{}
	for _, it := range rep.Items {
		byCat[it.Category] = append(byCat[it.Category], it)
	}
	link := func(cat string, page int) string {
		v := url.Values{"date": {d.Date}}
		if cat != "" {
			v.Set("category", cat)
		}
		if page > 1 {
			v.Set("page", strconv.Itoa(page))
		}
		return "/console/reconciliation?" + v.Encode()
	}
	for _, c := range reconcile.Categories {
		items := byCat[c]
		g := reconGroup{Category: c, Totals: rep.Summary.Categories[c], Count: len(items)}
		d.Totals = append(d.Totals, g)
		if d.Category != "" && string(c) != d.Category {
			continue
		}
		if d.Category != "" {
			d.Pages = max(1, (len(items)+consolePage-1)/consolePage)
			from := min((d.Page-1)*consolePage, len(items))
			g.Items = items[from:min(from+consolePage, len(items))]
		} else {
			g.Items = items[:min(consolePage, len(items))]
			if len(items) > consolePage {
				g.More = link(string(c), 1)
			}
		}
		d.Groups = append(d.Groups, g)
	}
	if d.Category != "" && len(d.Groups) == 0 {
		s.consoleFail(w, r, problem(http.StatusBadRequest, "invalid_request", "There is no reconciliation category "+strconv.Quote(d.Category)+"."),
			link("", 1), "Back to the night")
		return
	}
	d.PageURL = func(p int) string { return link(d.Category, p) }
	s.render(w, r, http.StatusOK, "reconciliation", view{Title: "Reconciliation " + d.Date, Nav: "reconciliation", Data: d})
}

// consoleDecideProposal accepts or rejects a proposed resolution with a
// reason, through the same call as the manager API (Server.decide), then
// returns to the night it belongs to.
func (s *Server) consoleDecideProposal(w http.ResponseWriter, r *http.Request) {
	back := "/console/reconciliation"
	if d := r.PostForm.Get("date"); d != "" {
		if _, err := time.Parse(time.DateOnly, d); err == nil {
			back += "?date=" + url.QueryEscape(d)
		}
	}
	id, err := strconv.ParseInt(chi.URLParam(r, "id"), 10, 64)
	action := chi.URLParam(r, "action")
	if err != nil || id <= 0 || (action != "accept" && action != "reject") {
		s.consoleNotFound(w, r)
		return
	}
	reason, ok := s.formReason(w, r, back)
	if !ok {
		return
	}
	if err := s.decide(r, id, action == "accept", reason); err != nil {
		s.consoleFail(w, r, err, back, "Back to the reconciliation")
		return
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}
