package web

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"storepay/gateway"
	"storepay/migrations"
	"storepay/orders"
	"storepay/saf"
)

// consolePaymentStatuses are the payment statuses in the order a
// manager meets them.
var consolePaymentStatuses = []string{"pending", "authorized", "captured", "declined", "stored", "voided", "refunded",
	"partially_refunded", "declined_after_forward"}

type paymentsData struct {
	Q, Last4, Terminal, Status, From, To string
	Payments                             []orders.Payment
	Next                                 string
	First                                bool
	Terminals                            []string
	Statuses                             []string
	Problem                              string
}

// consoleTimeLayouts are what a datetime-local or date field sends. They
// are read in the store's own time zone.
var consoleTimeLayouts = []string{"2006-01-02T15:04", "2006-01-02T15:04:05", "2006-01-02"}

func parseLocal(s string) (time.Time, bool) {
	for _, l := range consoleTimeLayouts {
		// Stored times sort as text with four-digit years: a year past
		// 9998 (a day added to 9999-12-31) would sort before every other.
		if t, err := time.ParseInLocation(l, s, time.Local); err == nil && t.Year() >= 1 && t.Year() <= 9998 {
			return t, true
		}
	}
	return time.Time{}, false
}

func digits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// consolePayments searches payments, newest first, 50 a page (keyset:
// the "older" link carries the last row's time and id).
func (s *Server) consolePayments(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d := paymentsData{Q: strings.TrimSpace(q.Get("q")), Terminal: strings.TrimSpace(q.Get("terminal")),
		Status: q.Get("status"), From: q.Get("from"), To: q.Get("to"), Statuses: consolePaymentStatuses}
	var problems []string
	// A card number typed into a search box is neither searched nor shown
	// back: only its last four digits are ever searched.
	if gateway.MaskPANs(d.Q) != d.Q || gateway.MaskPANs(d.Terminal) != d.Terminal {
		d.Q, d.Terminal = "", ""
		problems = append(problems, "That looks like a card number: search by its last four digits instead.")
	}
	f := orders.SearchFilter{Limit: consolePage, TerminalID: d.Terminal}
	switch {
	case strings.HasPrefix(d.Q, "saf_"):
		http.Redirect(w, r, "/console/saf/"+url.PathEscape(d.Q), http.StatusSeeOther)
		return
	case strings.HasPrefix(d.Q, "ord_"):
		f.OrderID = d.Q
	case d.Q != "":
		f.PaymentID = d.Q
	}
	// Only the last four digits are ever searched or shown back: anything
	// longer might be a card number, and is not echoed into the page.
	if l4 := strings.TrimSpace(q.Get("last4")); l4 != "" {
		if len(l4) == 4 && digits(l4) {
			d.Last4, f.Last4 = l4, l4
		} else {
			problems = append(problems, "Card: enter only the last four digits.")
		}
	}
	if d.Status != "" {
		if !slices.Contains(consolePaymentStatuses, d.Status) {
			problems = append(problems, "Status: not a payment status.")
			d.Status = ""
		}
		f.Status = orders.Status(d.Status)
	}
	if d.From != "" {
		if t, ok := parseLocal(d.From); ok {
			f.From = t
		} else {
			problems = append(problems, "From: use a date and time such as 2026-11-21T09:00.")
		}
	}
	if d.To != "" {
		if t, ok := parseLocal(d.To); ok {
			f.To = t
			if len(d.To) == len("2006-01-02") {
				f.To = t.AddDate(0, 0, 1) // a date alone means to the end of that day
			}
		} else {
			problems = append(problems, "To: use a date and time such as 2026-11-21T18:00.")
		}
	}
	if at := q.Get("before_at"); at != "" {
		t, err := migrations.ParseTime(at)
		if err == nil {
			f.BeforeAt, f.BeforeID = t, q.Get("before_id")
		}
	}
	d.First = f.BeforeAt.IsZero()
	if devs, err := s.devices.List(r.Context()); err == nil {
		for _, dv := range devs {
			d.Terminals = append(d.Terminals, dv.Name)
		}
	}
	if len(problems) > 0 {
		d.Problem = strings.Join(problems, " ")
		s.render(w, r, http.StatusBadRequest, "payments", view{Title: "Payments", Nav: "payments", Data: d})
		return
	}
	ps, more, err := s.orders.Search(r.Context(), f)
	if err != nil {
		s.consoleInternal(w, r, err)
		return
	}
	d.Payments = ps
	if more && len(ps) > 0 {
		last := ps[len(ps)-1]
		v := url.Values{}
		for k, val := range map[string]string{"q": d.Q, "last4": d.Last4, "terminal": d.Terminal, "status": d.Status, "from": d.From, "to": d.To} {
			if val != "" {
				v.Set(k, val)
			}
		}
		v.Set("before_at", migrations.FormatTime(last.CreatedAt))
		v.Set("before_id", last.ID)
		d.Next = "/console/payments?" + v.Encode()
	}
	s.render(w, r, http.StatusOK, "payments", view{Title: "Payments", Nav: "payments", Data: d})
}

type paymentData struct {
	P       orders.Payment
	Events  []orders.Change
	Refunds []orders.Refund
	Rec     *saf.Record
}

func (s *Server) consolePayment(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	p, err := s.orders.Payment(r.Context(), id)
	if err != nil {
		s.consoleFail(w, r, err, "/console/payments", "Back to the payments")
		return
	}
	d := paymentData{P: p}
	if d.Events, err = s.orders.Events(r.Context(), id); err != nil {
		s.consoleInternal(w, r, err)
		return
	}
	if d.Refunds, err = s.orders.Refunds(r.Context(), id); err != nil {
		s.consoleInternal(w, r, err)
		return
	}
	rec, err := s.saf.RecordForPayment(r.Context(), id)
	switch de := orders.AsError(err); {
	case err == nil:
		d.Rec = &rec
	case de == nil || de.Kind != orders.KindNotFound:
		s.consoleInternal(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "payment", view{Title: "Payment " + p.ID, Nav: "payments", Data: d})
}

type orderPayment struct {
	orders.Payment
	Events []orders.Change
}

type orderData struct {
	O        orders.Order
	Payments []orderPayment
}

func (s *Server) consoleOrder(w http.ResponseWriter, r *http.Request) {
	o, err := s.orders.Order(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		s.consoleFail(w, r, err, "/console/payments", "Back to the payments")
		return
	}
	d := orderData{O: o}
	for _, p := range o.Payments {
		ev, err := s.orders.Events(r.Context(), p.ID)
		if err != nil {
			s.consoleInternal(w, r, err)
			return
		}
		d.Payments = append(d.Payments, orderPayment{Payment: p, Events: ev})
	}
	s.render(w, r, http.StatusOK, "order", view{Title: "Order " + o.ID, Nav: "payments", Data: d})
}
