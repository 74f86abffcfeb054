package web

import (
	"bytes"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"storepay/devices"
	"storepay/gateway"
	"storepay/saf"
)

var safStatuses = map[string]bool{"queued": true, "forwarding": true, "held": true, "forwarded": true, "declined": true, "expired": true}

// listMax is the most a list answers at once, and what it answers when
// no limit is asked: the contract's lists are plain {"data": [...]}, so a
// client that does not page gets everything a store holds in practice
// (the queue is bounded by total_limit). Past it, "has_more" says so and
// limit and offset page.
const listMax = 10_000

// pageParams reads limit and offset.
func pageParams(r *http.Request) (limit, offset int, err error) {
	q := r.URL.Query()
	limit = listMax
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > listMax {
			return 0, 0, problem(http.StatusBadRequest, "invalid_request", "limit must be 1 to 10000")
		}
	}
	if v := q.Get("offset"); v != "" {
		if offset, err = strconv.Atoi(v); err != nil || offset < 0 {
			return 0, 0, problem(http.StatusBadRequest, "invalid_request", "offset must be a non-negative integer")
		}
	}
	return limit, offset, nil
}

func (s *Server) listSAF(w http.ResponseWriter, r *http.Request) {
	status := r.URL.Query().Get("status")
	if status != "" && !safStatuses[status] {
		s.fail(w, r, problem(http.StatusBadRequest, "invalid_request", "status "+strconv.Quote(status)+" is not a store-and-forward status"))
		return
	}
	limit, offset, err := pageParams(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	recs, err := s.saf.List(r.Context(), saf.Filter{Status: saf.Status(status), Gateway: r.URL.Query().Get("gateway"), Limit: limit + 1, Offset: offset})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": recs[:min(len(recs), limit)], "has_more": len(recs) > limit})
}

func (s *Server) getSAF(w http.ResponseWriter, r *http.Request) {
	rec, attempts, err := s.saf.Get(r.Context(), chi.URLParam(r, "id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"record": rec, "attempts": attempts})
}

func (s *Server) safStats(w http.ResponseWriter, r *http.Request) {
	st, err := s.saf.Stats(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

// reasonRequest is the optional body of a manager action. Its reason is
// limited to 500 characters (decode's checkLengths names it), counted as
// characters, not bytes: 300 accented letters are a short reason.
type reasonRequest struct {
	Reason string `json:"reason" max:"500"`
}

// decodeReason reads an optional {"reason": "..."} body: an empty body
// is no reason.
func decodeReason(w http.ResponseWriter, r *http.Request) (string, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		return "", decodeProblem(err)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return "", nil
	}
	var req reasonRequest
	r.Body = io.NopCloser(bytes.NewReader(body))
	if err := decode(w, r, &req); err != nil {
		return "", err
	}
	// A reason goes to the audit log and into answers: a card number in
	// it is masked, as everywhere storepay keeps text from outside.
	return gateway.MaskPANs(req.Reason), nil
}

func (s *Server) safAction(act func(q *saf.Queue, r *http.Request, id, actor, reason string) (saf.Record, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		reason, err := decodeReason(w, r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		rec, err := act(s.saf, r, chi.URLParam(r, "id"), info(r).Device.Name, reason)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, rec)
	}
}

func (s *Server) replaySAF(q *saf.Queue, r *http.Request, id, actor, reason string) (saf.Record, error) {
	return q.Replay(r.Context(), id, actor, reason)
}

func (s *Server) holdSAF(q *saf.Queue, r *http.Request, id, actor, reason string) (saf.Record, error) {
	return q.Hold(r.Context(), id, actor, reason)
}

func (s *Server) releaseSAF(q *saf.Queue, r *http.Request, id, actor, reason string) (saf.Record, error) {
	return q.Release(r.Context(), id, actor, reason)
}

func (s *Server) replayAllSAF(w http.ResponseWriter, r *http.Request) {
	reason, err := decodeReason(w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	res, err := s.saf.ReplayAll(r.Context(), info(r).Device.Name, reason)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) getEStop(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.saf.EStop(r.Context()))
}

type estopRequest struct {
	State string `json:"state"`
	// Reason is cut to maxReason rather than refused: an emergency
	// request is acted on (see putEStop).
	Reason string `json:"reason" max:"1048576"`
}

// putEStop sets the emergency stop. The contract says anything
// unreadable counts as stop, and a garbled emergency request is safest
// read that way: a request that names no valid state engages stop and is
// answered with the new state. A body the HTTP conventions refuse
// (malformed JSON, unknown fields, wrong types) still gets its 400, after
// stop is engaged.
func (s *Server) putEStop(w http.ResponseWriter, r *http.Request) {
	var req estopRequest
	derr := decode(w, r, &req)
	state, reason := saf.EStopState(req.State), req.Reason
	if len(reason) > maxReason {
		reason = strings.ToValidUTF8(reason[:maxReason], "") + "…"
	}
	if derr != nil || !state.Valid() {
		why := fmt.Sprintf("state %q is not go, pause or stop", req.State)
		if derr != nil {
			why = "the body could not be read"
		}
		if reason != "" {
			why += "; its reason: " + reason
		}
		reason = "unreadable request taken as stop (" + why + ")"
		state = saf.Stop
	}
	// The reason (and a state that was not one) is kept and answered: no
	// card number in it.
	reason = gateway.MaskPANs(reason)
	e, err := s.saf.SetEStop(r.Context(), state, info(r).Device.Name, reason)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var p *Problem
	if errors.As(derr, &p) {
		p.Detail += "; the emergency stop is now stop (anything unreadable counts as stop)"
		s.fail(w, r, p)
		return
	}
	writeJSON(w, http.StatusOK, e)
}

// maxReason bounds a reason kept in the audit log.
const maxReason = 500

func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) {
	limit, _, err := pageParams(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	before, _ := strconv.ParseInt(r.URL.Query().Get("before"), 10, 64)
	entries, err := devices.AuditLog(r.Context(), s.db, devices.AuditFilter{Action: r.URL.Query().Get("action"),
		Target: r.URL.Query().Get("target"), Before: before, Limit: limit + 1})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": entries[:min(len(entries), limit)], "has_more": len(entries) > limit})
}

// audited runs a manager action that is not a database change of its own
// (enabling a bank) and records it in the audit log.
func (s *Server) audited(r *http.Request, action, target, reason string) error {
	return s.db.Update(r.Context(), func(tx *sql.Tx) error {
		return devices.Audit(tx, devices.Entry{At: s.now(), Actor: info(r).Device.Name, Action: action, Target: target, Reason: reason})
	})
}
