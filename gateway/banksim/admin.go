package banksim

import (
	"io"
	"net/http"
	"time"
)

// AdminHandler serves the admin API, for a simulator run as a process
// (and chain tests rehearsing outages). It has no authentication: serve it
// on loopback only, apart from the protocol listeners so that Refuse does
// not cut it off. Answers are JSON; errors are {"code","message"}.
//
//	GET    /admin/ledger                       the Ledger
//	GET    /admin/faults                       installed faults: {"all":{...},"by_url":{...}}
//	PUT    /admin/faults                       install Faults; "url" in the body targets one listener
//	DELETE /admin/faults[?url=U]               lift every fault, or those of one listener
//	POST   /admin/close?date=YYYY-MM-DD        close a business date now (default: today)
//	POST   /admin/settlement-rows?date=...     append the raw CSV rows of the body to a date's report
//	GET    /admin/settlement?date=YYYY-MM-DD   the date's report (CSV) of Config.APIKey's account, where
//	                                           ISO 8583 operations are booked: the file an ISO gateway's
//	                                           reconciliation reads; 404 not_closed for a day still open
//	POST   /admin/reset                        empty the ledger, lift faults (see Sim.Reset)
func (s *Sim) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/ledger", s.adminLedger)
	mux.HandleFunc("GET /admin/faults", s.adminFaults)
	mux.HandleFunc("PUT /admin/faults", s.adminSetFaults)
	mux.HandleFunc("DELETE /admin/faults", s.adminClearFaults)
	mux.HandleFunc("POST /admin/close", s.adminClose)
	mux.HandleFunc("POST /admin/settlement-rows", s.adminSettlementRows)
	mux.HandleFunc("GET /admin/settlement", s.adminSettlement)
	mux.HandleFunc("POST /admin/reset", s.adminReset)
	return mux
}

// FaultsRequest is the body of PUT /admin/faults: Faults plus the URL of
// the listener they are for ("" or absent: every listener).
type FaultsRequest struct {
	URL string `json:"url,omitempty"`
	Faults
}

type faultsView struct {
	All   *Faults           `json:"all"`
	ByURL map[string]Faults `json:"by_url"`
}

func (s *Sim) adminLedger(w http.ResponseWriter, _ *http.Request) {
	s.write(w, jsonAnswer(http.StatusOK, s.Ledger()), false)
}

func (s *Sim) adminFaults(w http.ResponseWriter, _ *http.Request) {
	v := faultsView{ByURL: map[string]Faults{}}
	for url, f := range s.Faults() {
		if url == "" {
			v.All = &f
		} else {
			v.ByURL[url] = f
		}
	}
	s.write(w, jsonAnswer(http.StatusOK, v), false)
}

func (s *Sim) adminSetFaults(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
	if err != nil {
		s.write(w, invalid("body too large or unreadable"), false)
		return
	}
	var req FaultsRequest
	if err := decode(body, &req); err != nil {
		s.write(w, invalid("malformed faults: "+err.Error()), false)
		return
	}
	if err := s.SetFaults(req.URL, req.Faults); err != nil {
		s.write(w, invalid(err.Error()), false)
		return
	}
	s.adminFaults(w, r)
}

func (s *Sim) adminClearFaults(w http.ResponseWriter, r *http.Request) {
	var err error
	if url := r.URL.Query().Get("url"); url != "" {
		err = s.SetFaults(url, Faults{})
	} else {
		err = s.ClearFaults()
	}
	if err != nil {
		s.write(w, invalid(err.Error()), false)
		return
	}
	s.adminFaults(w, r)
}

func (s *Sim) adminClose(w http.ResponseWriter, r *http.Request) {
	day := r.URL.Query().Get("date")
	if day == "" {
		day = s.now().Format(time.DateOnly)
	}
	if err := s.CloseDay(day); err != nil {
		s.write(w, invalid(err.Error()), false)
		return
	}
	s.write(w, jsonAnswer(http.StatusOK, map[string]string{"closed": day}), false)
}

func (s *Sim) adminSettlementRows(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 16<<20))
	if err != nil {
		s.write(w, invalid("body too large or unreadable"), false)
		return
	}
	day := r.URL.Query().Get("date")
	if err := s.AddSettlementRows(day, body); err != nil {
		s.write(w, invalid(err.Error()), false)
		return
	}
	s.write(w, jsonAnswer(http.StatusOK, map[string]any{"date": day, "bytes": len(body)}), false)
}

func (s *Sim) adminSettlement(w http.ResponseWriter, r *http.Request) {
	day := r.URL.Query().Get("date")
	if _, err := time.Parse(time.DateOnly, day); err != nil {
		s.write(w, invalid("date must be YYYY-MM-DD"), false)
		return
	}
	report, ok := s.Settlement("", day)
	if !ok {
		s.write(w, errorAnswer(http.StatusNotFound, "not_closed", "business date "+day+" is not closed yet"), false)
		return
	}
	s.write(w, answer{status: http.StatusOK, contentType: "text/csv; charset=utf-8", body: report}, false)
}

func (s *Sim) adminReset(w http.ResponseWriter, _ *http.Request) {
	if err := s.Reset(); err != nil {
		s.write(w, errorAnswer(http.StatusInternalServerError, "reset_failed", err.Error()), false)
		return
	}
	s.write(w, jsonAnswer(http.StatusOK, map[string]string{"status": "reset"}), false)
}
