package web

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"storepay/devices"
	"storepay/gateway"
	"storepay/saf"
)

// consolePage is how many rows a console list shows at once.
const consolePage = 50

// consoleFlash are the messages a page shows after a successful action,
// by the key its redirect carries (?done=KEY): fixed texts, so a link
// cannot make the console say something it did not.
var consoleFlash = map[string]string{
	"replay":  "Replayed: the record is due now and is forwarded as soon as the emergency stop and its bank allow.",
	"hold":    "Held: the record will not be forwarded until a manager releases it.",
	"release": "Released: the record is back in the queue, due now.",
	"replay_all": "Replayed the queue: every queued and held record is due now and is forwarded as soon as the emergency stop and the banks allow. " +
		"The audit log says how many.",
	"estop":   "The emergency stop was changed.",
	"enable":  "The bank is back in service and its circuit breaker is closed.",
	"disable": "The bank is out of service until a manager enables it.",
}

func flash(r *http.Request) string { return consoleFlash[r.URL.Query().Get("done")] }

// formReason reads the reason every console action must give: it goes to
// the audit log with the action. The JSON API's limit applies.
func (s *Server) formReason(w http.ResponseWriter, r *http.Request, back string) (string, bool) {
	reason := strings.TrimSpace(r.PostForm.Get("reason"))
	switch {
	case reason == "":
		s.render(w, r, http.StatusBadRequest, "error", view{Title: "A reason is needed",
			Error: "Say why: the reason goes into the audit log with the action. Nothing was changed.",
			Data:  map[string]string{"Back": back, "BackLabel": "Back"}})
		return "", false
	case utf8.RuneCountInString(reason) > 500 || len(reason) > 2000:
		s.render(w, r, http.StatusBadRequest, "error", view{Title: "Reason too long",
			Error: "A reason is limited to 500 characters. Nothing was changed.",
			Data:  map[string]string{"Back": back, "BackLabel": "Back"}})
		return "", false
	}
	// Kept in the audit log and shown: no card number in it.
	return gateway.MaskPANs(reason), true
}

// pageNumber reads ?page=N (1-based).
func pageNumber(r *http.Request) int {
	n, err := strconv.Atoi(r.URL.Query().Get("page"))
	if err != nil || n < 1 {
		return 1
	}
	return min(n, 1_000_000)
}

type statusCount struct {
	Status string
	Count  int
}

type dashboardData struct {
	Online    bool
	Preferred string
	Banks     []gateway.Status
	Stats     saf.Stats
	Statuses  []statusCount
	LimitWarn bool
	AgeWarn   bool
}

func (s *Server) consoleDashboard(w http.ResponseWriter, r *http.Request) {
	st, err := s.saf.Stats(r.Context())
	if err != nil {
		s.consoleInternal(w, r, err)
		return
	}
	d := dashboardData{Banks: s.router.Statuses(), Stats: st, Preferred: s.router.Preferred()}
	for _, b := range d.Banks {
		// Selling online means the next card payment goes to a bank that
		// is working, not one whose breaker merely allows a trial.
		if b.Name == d.Preferred && (b.State == "closed" || b.State == "half_open") {
			d.Online = true
		}
	}
	for _, status := range []saf.Status{saf.Queued, saf.Forwarding, saf.Held, saf.Expired, saf.Forwarded, saf.Declined} {
		d.Statuses = append(d.Statuses, statusCount{string(status), st.ByStatus[status]})
	}
	d.LimitWarn = st.TotalLimit > 0 && st.Outstanding*5 >= st.TotalLimit*4
	d.AgeWarn = st.MaxAgeSeconds > 0 && st.OldestAgeSeconds*5 >= st.MaxAgeSeconds*4
	s.render(w, r, http.StatusOK, "dashboard", view{Title: "Dashboard", Nav: "dashboard", Flash: flash(r), Data: d})
}

type queueData struct {
	Records  []saf.Record
	Status   string
	Bank     string
	Banks    []string
	Statuses []string
	Page     int
	Pages    int
	Total    int
	Sums     []saf.Sum // the total per currency (see saf.Queue.Sums)
	PageURL  func(int) string
	From, To int
}

func (s *Server) consoleQueue(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	d := queueData{Status: q.Get("status"), Bank: q.Get("bank"), Page: pageNumber(r), Banks: s.router.Banks(),
		Statuses: []string{"queued", "forwarding", "held", "expired", "forwarded", "declined"}}
	if d.Status != "" && !safStatuses[d.Status] {
		s.consoleFail(w, r, problem(http.StatusBadRequest, "invalid_request", "There is no queue status "+strconv.Quote(d.Status)+"."), "/console/saf", "Back to the queue")
		return
	}
	f := saf.Filter{Status: saf.Status(d.Status), Gateway: d.Bank, Limit: consolePage, Offset: (d.Page - 1) * consolePage}
	var err error
	if d.Total, _, err = s.saf.Count(r.Context(), f); err != nil {
		s.consoleInternal(w, r, err)
		return
	}
	if d.Sums, err = s.saf.Sums(r.Context(), f); err != nil {
		s.consoleInternal(w, r, err)
		return
	}
	if d.Records, err = s.saf.List(r.Context(), f); err != nil {
		s.consoleInternal(w, r, err)
		return
	}
	d.Pages = max(1, (d.Total+consolePage-1)/consolePage)
	if len(d.Records) > 0 {
		d.From, d.To = f.Offset+1, f.Offset+len(d.Records)
	}
	d.PageURL = func(p int) string {
		v := url.Values{}
		if d.Status != "" {
			v.Set("status", d.Status)
		}
		if d.Bank != "" {
			v.Set("bank", d.Bank)
		}
		if p > 1 {
			v.Set("page", strconv.Itoa(p))
		}
		if len(v) == 0 {
			return "/console/saf"
		}
		return "/console/saf?" + v.Encode()
	}
	s.render(w, r, http.StatusOK, "queue", view{Title: "Store-and-forward queue", Nav: "saf", Flash: flash(r), Data: d})
}

type recordData struct {
	Rec                            saf.Record
	Attempts                       []saf.Attempt
	CanReplay, CanHold, CanRelease bool
}

func (s *Server) consoleRecord(w http.ResponseWriter, r *http.Request) {
	rec, attempts, err := s.saf.Get(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		s.consoleFail(w, r, err, "/console/saf", "Back to the queue")
		return
	}
	d := recordData{Rec: rec, Attempts: attempts}
	switch rec.Status {
	case saf.Queued, saf.Expired:
		d.CanReplay, d.CanHold = true, true
	case saf.Held:
		d.CanReplay, d.CanRelease = true, true
	}
	s.render(w, r, http.StatusOK, "record", view{Title: "Record " + rec.ID, Nav: "saf", Flash: flash(r), Data: d})
}

// consoleRecordAction replays, holds or releases one record through the
// JSON API's own handlers' domain calls.
func (s *Server) consoleRecordAction(w http.ResponseWriter, r *http.Request) {
	id, action := chi.URLParam(r, "id"), chi.URLParam(r, "action")
	back := "/console/saf/" + url.PathEscape(id)
	var act func(q *saf.Queue, r *http.Request, id, actor, reason string) (saf.Record, error)
	switch action {
	case "replay":
		act = s.replaySAF
	case "hold":
		act = s.holdSAF
	case "release":
		act = s.releaseSAF
	default:
		s.consoleNotFound(w, r)
		return
	}
	reason, ok := s.formReason(w, r, back)
	if !ok {
		return
	}
	if _, err := act(s.saf, r, id, info(r).Device.Name, reason); err != nil {
		s.consoleFail(w, r, err, back, "Back to the record")
		return
	}
	http.Redirect(w, r, back+"?done="+action, http.StatusSeeOther)
}

type replayAllData struct {
	Queued, Held             int
	QueuedAmount, HeldAmount int64
	Count                    int
	Amount                   int64
	Sums                     []saf.Sum
}

// consoleReplayAllConfirm shows what a replay of the whole queue touches
// before it is done.
func (s *Server) consoleReplayAllConfirm(w http.ResponseWriter, r *http.Request) {
	var d replayAllData
	var err error
	if d.Queued, d.QueuedAmount, err = s.saf.Count(r.Context(), saf.Filter{Status: saf.Queued}); err != nil {
		s.consoleInternal(w, r, err)
		return
	}
	if d.Held, d.HeldAmount, err = s.saf.Count(r.Context(), saf.Filter{Status: saf.Held}); err != nil {
		s.consoleInternal(w, r, err)
		return
	}
	// What a replay of everything would touch, counted as it counts:
	// records pinned to a bank that is not configured stay held.
	all, err := s.saf.ReplayAllCount(r.Context())
	if err != nil {
		s.consoleInternal(w, r, err)
		return
	}
	d.Count, d.Amount = all.Count, all.Amount
	if d.Sums, err = s.saf.ReplayAllSums(r.Context()); err != nil {
		s.consoleInternal(w, r, err)
		return
	}
	s.render(w, r, http.StatusOK, "replay_all", view{Title: "Replay the queue", Nav: "saf", Data: d})
}

// consoleReplayAll replays every queued and held record in one audited
// action. What it touched is counted in the same transaction and shown;
// it may differ from the confirmation page if records came or went since.
func (s *Server) consoleReplayAll(w http.ResponseWriter, r *http.Request) {
	reason, ok := s.formReason(w, r, "/console/saf/replay-all")
	if !ok {
		return
	}
	if _, err := s.saf.ReplayAll(r.Context(), info(r).Device.Name, reason); err != nil {
		s.consoleFail(w, r, err, "/console/saf", "Back to the queue")
		return
	}
	// How many it touched is in the audit log; no figure travels in the
	// URL, where a crafted link could make the console claim anything.
	http.Redirect(w, r, "/console/saf?done=replay_all", http.StatusSeeOther)
}

type estopData struct {
	Current    saf.EStop
	History    []devices.Entry
	NextBefore int64
}

func (s *Server) consoleEStop(w http.ResponseWriter, r *http.Request) {
	before, _ := strconv.ParseInt(r.URL.Query().Get("before"), 10, 64)
	hist, err := devices.AuditLog(r.Context(), s.db, devices.AuditFilter{Target: "estop", Before: before, Limit: consolePage + 1})
	if err != nil {
		s.consoleInternal(w, r, err)
		return
	}
	d := estopData{Current: s.saf.EStop(r.Context()), History: hist}
	if len(hist) > consolePage {
		d.History = hist[:consolePage]
		d.NextBefore = d.History[consolePage-1].Seq
	}
	s.render(w, r, http.StatusOK, "estop", view{Title: "Emergency stop", Nav: "estop", Flash: flash(r), Data: d})
}

// consoleSetEStop sets the emergency stop. Stopping must never be held up:
// pause and stop need no reason, and anything unreadable counts as stop,
// as on the API; only going again needs one.
func (s *Server) consoleSetEStop(w http.ResponseWriter, r *http.Request) {
	state := saf.EStopState(r.PostForm.Get("state"))
	var reason string
	switch {
	case state == saf.Go:
		var ok bool
		if reason, ok = s.formReason(w, r, "/console/estop"); !ok {
			return
		}
	case state.Valid():
		reason = strings.TrimSpace(r.PostForm.Get("reason"))
		if len(reason) > maxReason {
			reason = strings.ToValidUTF8(reason[:maxReason], "") + "…"
		}
		if reason == "" {
			reason = "no reason given"
		}
	default:
		reason, state = fmt.Sprintf("unreadable request taken as stop (state %q is not go, pause or stop)", r.PostForm.Get("state")), saf.Stop
	}
	reason = gateway.MaskPANs(reason) // kept and shown: no card number in it
	if _, err := s.saf.SetEStop(r.Context(), state, info(r).Device.Name, reason); err != nil {
		s.consoleFail(w, r, err, "/console/estop", "Back to the emergency stop")
		return
	}
	http.Redirect(w, r, "/console/estop?done=estop", http.StatusSeeOther)
}

type bankView struct {
	gateway.Status
	Preferred bool
	Attempts  []saf.BankAttempt
}

func (s *Server) consoleBanks(w http.ResponseWriter, r *http.Request) {
	preferred := s.router.Preferred()
	var banks []bankView
	for _, st := range s.router.Statuses() {
		attempts, err := s.saf.RecentAttempts(r.Context(), st.Name, 10)
		if err != nil {
			s.consoleInternal(w, r, err)
			return
		}
		banks = append(banks, bankView{Status: st, Preferred: st.Name == preferred, Attempts: attempts})
	}
	s.render(w, r, http.StatusOK, "banks", view{Title: "Banks", Nav: "banks", Flash: flash(r), Data: banks})
}

// consoleBankAction enables or disables a bank as the JSON API does: the
// router's own method, then the audit entry through [Server.audited].
func (s *Server) consoleBankAction(w http.ResponseWriter, r *http.Request) {
	name, action := chi.URLParam(r, "name"), chi.URLParam(r, "action")
	if action != "enable" && action != "disable" {
		s.consoleNotFound(w, r)
		return
	}
	reason, ok := s.formReason(w, r, "/console/banks")
	if !ok {
		return
	}
	if !slices.Contains(s.router.Banks(), name) {
		s.consoleFail(w, r, problem(http.StatusNotFound, "gateway_not_found", "There is no bank "+strconv.Quote(name)+"."), "/console/banks", "Back to the banks")
		return
	}
	if err := s.setGateway(r, name, action == "enable", reason); err != nil {
		s.consoleFail(w, r, err, "/console/banks", "Back to the banks")
		return
	}
	http.Redirect(w, r, "/console/banks?done="+action, http.StatusSeeOther)
}

type auditData struct {
	Entries    []devices.Entry
	Action     string
	Target     string
	Actions    []string
	NextBefore int64
	Filtered   bool
}

func (s *Server) consoleAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	before, _ := strconv.ParseInt(q.Get("before"), 10, 64)
	d := auditData{Action: q.Get("action"), Target: strings.TrimSpace(q.Get("target")), Actions: []string{
		"saf.replay", "saf.replay_all", "saf.hold", "saf.release", "estop.go", "estop.pause", "estop.stop",
		"reconciliation.accept", "reconciliation.reject",
		"gateway.enable", "gateway.disable", "device.enroll", "device.revoke", "device.rename", "console.login", "console.logout"}}
	d.Filtered = d.Action != "" || d.Target != "" || before > 0
	entries, err := devices.AuditLog(r.Context(), s.db, devices.AuditFilter{Action: d.Action, Target: d.Target, Before: before, Limit: consolePage + 1})
	if err != nil {
		s.consoleInternal(w, r, err)
		return
	}
	d.Entries = entries
	if len(entries) > consolePage {
		d.Entries = entries[:consolePage]
		d.NextBefore = d.Entries[consolePage-1].Seq
	}
	s.render(w, r, http.StatusOK, "audit", view{Title: "Audit log", Nav: "audit", Data: d})
}
