package web

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"storepay/gateway"
	"storepay/migrations"
	"storepay/orders"
)

// Problem is an RFC 9457 problem document. Detail is safe to show a
// terminal: it never carries a card number or an internal error.
type Problem struct {
	Type      string `json:"type"`
	Title     string `json:"title"`
	Status    int    `json:"status"`
	Detail    string `json:"detail"`
	Code      string `json:"code"`
	RequestID string `json:"request_id,omitempty"`
}

func problem(status int, code, detail string) *Problem {
	return &Problem{Type: "urn:storepay:problem:" + code, Title: http.StatusText(status), Status: status, Detail: detail, Code: code}
}

func writeProblem(w http.ResponseWriter, r *http.Request, p *Problem) {
	p.RequestID = info(r).ID
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(p.Status)
	w.Write(p.encode())
}

var kindStatus = map[orders.Kind]int{
	orders.KindInvalid:     http.StatusUnprocessableEntity,
	orders.KindBadRequest:  http.StatusBadRequest,
	orders.KindNotFound:    http.StatusNotFound,
	orders.KindConflict:    http.StatusConflict,
	orders.KindUnavailable: http.StatusServiceUnavailable,
}

// fail answers err (see problemFor).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	p, _ := s.problemFor(r, err)
	writeProblem(w, r, p)
}

// problemFor turns err into the problem a client hears. A domain error
// becomes its problem; anything else is logged with the request id and
// answered 500 (or 503 when the database refused the write) without its
// details. keep says whether the answer may stand for the request in
// idempotent replay: not a transient conflict, and not a reused key's
// refusal (stored, it would stand in the key's place and refuse the
// genuine repeat of the request the key belongs to).
func (s *Server) problemFor(r *http.Request, err error) (p *Problem, keep bool) {
	if de := orders.AsError(err); de != nil {
		return problem(kindStatus[de.Kind], de.Code, de.Message), !de.Transient && de.Code != "idempotency_key_reuse"
	}
	if errors.As(err, &p) {
		return p, true
	}
	s.log.Error("request failed", "request_id", info(r).ID, "method", r.Method, "path", r.URL.Path, "err", err)
	if storageFault(err) {
		return problem(http.StatusServiceUnavailable, "storage_unavailable",
			"storepay could not write to its database. Retry with the same Idempotency-Key, and take no other payment meanwhile: "+
				"a bank may have acted already, and the retry finds what was done and does nothing twice."), false
	}
	return problem(http.StatusInternalServerError, "internal_error",
		"an internal error occurred; see the server log for request "+info(r).ID), false
}

// encode is p as the body of its answer.
func (p *Problem) encode() []byte {
	q := *p
	q.Detail = gateway.MaskPANs(q.Detail) // it may quote what the client sent
	b, _ := json.Marshal(q)
	return append(b, '\n')
}

// storageFault reports whether err came from the database refusing a
// write (disk full, I/O error, read-only file, closed), by SQLite's
// result code (migrations.IsStorageFault), never by the error's text: a
// bank's message or a card holder's name saying "disk" is not one.
func storageFault(err error) bool { return migrations.IsStorageFault(err) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(v); err != nil {
		slog.Debug("write response", "err", err)
	}
}

func (p *Problem) Error() string { return p.Code + ": " + p.Detail }
