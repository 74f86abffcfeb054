package hq

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"

	"storepay/migrations"
)

// Handler is headquarters' HTTP API and console. Every request needs a
// bearer token from `storepay hq enroll`; the console takes it once and
// keeps it in a cookie-less query-free way: pages are served to the same
// bearer token (a browser sends it through the sign-in form as a cookie).
func (h *Hub) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/stores", h.auth(h.apiStores))
	mux.HandleFunc("GET /v1/exposure", h.auth(h.apiExposure))
	mux.HandleFunc("PUT /v1/estop", h.auth(h.apiEStop))
	mux.HandleFunc("PUT /v1/stores/{store_id}/estop", h.auth(h.apiEStop))
	mux.HandleFunc("PUT /v1/gateways/{name}", h.auth(h.apiGateway))
	mux.HandleFunc("PUT /v1/stores/{store_id}/gateways/{name}", h.auth(h.apiGateway))
	mux.HandleFunc("POST /v1/hot-cards", h.auth(h.apiHotCard))
	mux.HandleFunc("POST /v1/stores/{store_id}/hot-cards", h.auth(h.apiHotCard))
	mux.HandleFunc("GET /v1/commands/{id}", h.auth(h.apiCommand))
	mux.HandleFunc("GET /openapi.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(openapiDoc)
	})
	h.consoleRoutes(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "not_found", "no such endpoint")
	})
	return mux
}

type ctxKey struct{}

// actorOf is the name of the token that made the request.
func actorOf(r *http.Request) string { s, _ := r.Context().Value(ctxKey{}).(string); return s }

func (h *Hub) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			if c, err := r.Cookie(consoleCookie); err == nil {
				tok, ok = c.Value, true
			}
		}
		tok = strings.TrimSpace(tok)
		if !ok || tok == "" {
			writeProblem(w, http.StatusUnauthorized, "unauthorized", "a bearer token from `storepay hq enroll` is required")
			return
		}
		name, err := tokenName(r.Context(), h.DB, tok)
		if err != nil {
			h.log().Error("hq token lookup", "err", err)
			writeProblem(w, http.StatusInternalServerError, "internal", "internal error")
			return
		}
		if name == "" {
			writeProblem(w, http.StatusUnauthorized, "unauthorized", "unknown token")
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), ctxKey{}, name)))
	}
}

func writeProblem(w http.ResponseWriter, status int, code, detail string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"type": "urn:storepay:problem:" + code, "title": http.StatusText(status),
		"status": status, "detail": detail, "code": code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// SAFSummary is a store's (or the chain's) outstanding offline payments.
type SAFSummary struct {
	Count    int64   `json:"count"`
	Amount   int64   `json:"amount"`
	Currency string  `json:"currency"`
	OldestAt *string `json:"oldest_at"`
	// ExpiringSoon are those with less than a third of their store's
	// offline max age left (under 24 hours at the default 72): a bank
	// must take them soon or a manager must act.
	ExpiringSoon       int64 `json:"expiring_soon_count"`
	ExpiringSoonAmount int64 `json:"expiring_soon_amount"`
}

// expiringSoon is the SQL of an outstanding record of store s with less
// than a third of its max age left.
const expiringSoon = `julianday(f.created_at) + s.saf_max_age_seconds * 2.0 / 3.0 / 86400.0 <= julianday(?)`

// GatewayState is one bank's state at a store.
type GatewayState struct {
	Name  string `json:"name"`
	State string `json:"state"`
}

// StoreView is one row of GET /v1/stores.
type StoreView struct {
	StoreID     string         `json:"store_id"`
	LastEventAt *string        `json:"last_event_at"`
	Link        string         `json:"link"`
	EStop       string         `json:"estop"`
	EStopActor  string         `json:"estop_actor"`
	SAF         SAFSummary     `json:"saf"`
	Gateways    []GatewayState `json:"gateways"`
	Events      int64          `json:"events"`
	// DeclinedAfterForward is what banks declined after the store had
	// accepted the payment offline: money the chain will not get.
	DeclinedAfterForward int64 `json:"declined_after_forward_amount"`
	Discrepancies        int64 `json:"reconciliation_discrepancies"`
}

// outstanding is the SQL of a SAF record not yet forwarded or written off.
const outstanding = `status IN ('queued', 'forwarding', 'held')`

// Stores reads the chain view, store by store.
func (h *Hub) Stores(ctx context.Context) ([]StoreView, error) {
	links := h.Links()
	now := migrations.FormatTime(h.now())
	rows, err := h.DB.QueryContext(ctx, `SELECT s.store_id, s.last_event_at, s.estop_state, s.estop_actor, s.events,
		(SELECT count(*) FROM saf f WHERE f.store_id = s.store_id AND f.`+outstanding+`),
		(SELECT coalesce(sum(amount), 0) FROM saf f WHERE f.store_id = s.store_id AND f.`+outstanding+`),
		(SELECT coalesce(min(currency), '') FROM saf f WHERE f.store_id = s.store_id),
		(SELECT min(created_at) FROM saf f WHERE f.store_id = s.store_id AND f.`+outstanding+`),
		(SELECT count(*) FROM saf f WHERE f.store_id = s.store_id AND f.`+outstanding+` AND `+expiringSoon+`),
		(SELECT coalesce(sum(amount), 0) FROM saf f WHERE f.store_id = s.store_id AND f.`+outstanding+` AND `+expiringSoon+`),
		(SELECT coalesce(sum(amount), 0) FROM saf f WHERE f.store_id = s.store_id AND f.status = 'declined'),
		(SELECT count(*) FROM reconciliations c WHERE c.store_id = s.store_id AND c.status <> 'matched')
		FROM stores s ORDER BY s.store_id`, now, now)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []StoreView
	for rows.Next() {
		var v StoreView
		var last string
		var oldest sql.NullString
		if err := rows.Scan(&v.StoreID, &last, &v.EStop, &v.EStopActor, &v.Events, &v.SAF.Count, &v.SAF.Amount,
			&v.SAF.Currency, &oldest, &v.SAF.ExpiringSoon, &v.SAF.ExpiringSoonAmount, &v.DeclinedAfterForward, &v.Discrepancies); err != nil {
			return nil, err
		}
		if last != "" {
			v.LastEventAt = &last
		}
		if oldest.Valid {
			v.SAF.OldestAt = &oldest.String
		}
		v.Link = "down"
		if links[v.StoreID] {
			v.Link = "up"
		}
		v.Gateways = []GatewayState{}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	g, err := h.DB.QueryContext(ctx, `SELECT store_id, name, state FROM gateways ORDER BY store_id, name`)
	if err != nil {
		return nil, err
	}
	defer g.Close()
	idx := map[string]int{}
	for i, v := range out {
		idx[v.StoreID] = i
	}
	for g.Next() {
		var store string
		var s GatewayState
		if err := g.Scan(&store, &s.Name, &s.State); err != nil {
			return nil, err
		}
		if i, ok := idx[store]; ok {
			out[i].Gateways = append(out[i].Gateways, s)
		}
	}
	return out, g.Err()
}

func (h *Hub) apiStores(w http.ResponseWriter, r *http.Request) {
	v, err := h.Stores(r.Context())
	if err != nil {
		h.log().Error("hq stores", "err", err)
		writeProblem(w, http.StatusInternalServerError, "internal", "internal error")
		return
	}
	if v == nil {
		v = []StoreView{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": v})
}

// Exposure is the chain's offline exposure (GET /v1/exposure).
type Exposure struct {
	Stores                     int64   `json:"stores"`
	SAFCount                   int64   `json:"saf_count"`
	SAFAmount                  int64   `json:"saf_amount"`
	Currency                   string  `json:"currency"`
	OldestAt                   *string `json:"oldest_at"`
	DeclinedAfterForwardAmount int64   `json:"declined_after_forward_amount"`
	StoresWithSAF              int64   `json:"stores_with_saf"`
	ExpiringSoon               int64   `json:"expiring_soon_count"`
	ExpiringSoonAmount         int64   `json:"expiring_soon_amount"`
}

// ChainExposure sums the view over every store.
func (h *Hub) ChainExposure(ctx context.Context) (Exposure, error) {
	var e Exposure
	var oldest sql.NullString
	now := migrations.FormatTime(h.now())
	err := h.DB.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM stores),
		(SELECT count(*) FROM saf WHERE `+outstanding+`), (SELECT coalesce(sum(amount), 0) FROM saf WHERE `+outstanding+`),
		(SELECT coalesce(min(currency), '') FROM saf), (SELECT min(created_at) FROM saf WHERE `+outstanding+`),
		(SELECT coalesce(sum(amount), 0) FROM saf WHERE status = 'declined'),
		(SELECT count(DISTINCT store_id) FROM saf WHERE `+outstanding+`),
		(SELECT count(*) FROM saf f JOIN stores s USING (store_id) WHERE f.`+outstanding+` AND `+expiringSoon+`),
		(SELECT coalesce(sum(f.amount), 0) FROM saf f JOIN stores s USING (store_id) WHERE f.`+outstanding+` AND `+expiringSoon+`)`, now, now).
		Scan(&e.Stores, &e.SAFCount, &e.SAFAmount, &e.Currency, &oldest, &e.DeclinedAfterForwardAmount, &e.StoresWithSAF,
			&e.ExpiringSoon, &e.ExpiringSoonAmount)
	if oldest.Valid {
		e.OldestAt = &oldest.String
	}
	return e, err
}

func (h *Hub) apiExposure(w http.ResponseWriter, r *http.Request) {
	e, err := h.ChainExposure(r.Context())
	if err != nil {
		h.log().Error("hq exposure", "err", err)
		writeProblem(w, http.StatusInternalServerError, "internal", "internal error")
		return
	}
	writeJSON(w, http.StatusOK, e)
}

// decodeCommand reads a command's body: unknown fields and trailing
// data are refused, as at a store.
func decodeCommand(w http.ResponseWriter, r *http.Request, into any, shape string) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil || dec.More() {
		writeProblem(w, http.StatusBadRequest, "invalid_json", "body must be "+shape)
		return false
	}
	return true
}

// send sends c to the store the path names (none: the chain) and
// answers 202 with where to follow it.
func (h *Hub) send(w http.ResponseWriter, r *http.Request, c Command) {
	if !utf8.ValidString(c.Reason) {
		writeProblem(w, http.StatusUnprocessableEntity, "invalid_request", "reason must be UTF-8 text")
		return
	}
	store := r.PathValue("store_id")
	id, err := h.Send(r.Context(), store, c, actorOf(r))
	switch {
	case errors.Is(err, ErrUnknownStore):
		writeProblem(w, http.StatusNotFound, "store_not_found", "headquarters does not know store "+store)
		return
	case errors.Is(err, ErrBadCommand):
		writeProblem(w, http.StatusUnprocessableEntity, "invalid_request", strings.TrimPrefix(err.Error(), ErrBadCommand.Error()+": "))
		return
	case err != nil:
		h.log().Error("hq command", "kind", c.Kind, "err", err)
		writeProblem(w, http.StatusServiceUnavailable, "unavailable", "the command could not be recorded; try again")
		return
	}
	w.Header().Set("Location", "/v1/commands/"+id)
	writeJSON(w, http.StatusAccepted, map[string]any{"id": id, "state": "pending"})
}

func (h *Hub) apiEStop(w http.ResponseWriter, r *http.Request) {
	var body struct {
		State  string `json:"state"`
		Reason string `json:"reason"`
	}
	if decodeCommand(w, r, &body, `{"state":"go"|"pause"|"stop","reason":"..."}`) {
		h.send(w, r, Command{Kind: KindEStop, State: body.State, Reason: body.Reason})
	}
}

func (h *Hub) apiGateway(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Action string `json:"action"`
		Reason string `json:"reason"`
	}
	if decodeCommand(w, r, &body, `{"action":"disable"|"enable","reason":"..."}`) {
		h.send(w, r, Command{Kind: KindGateway, Gateway: r.PathValue("name"), Action: body.Action, Reason: body.Reason})
	}
}

func (h *Hub) apiHotCard(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Card   string `json:"card"`
		Action string `json:"action"`
		Reason string `json:"reason"`
	}
	if decodeCommand(w, r, &body, `{"card":"400000******9979","action":"add"|"remove","reason":"..."}`) {
		h.send(w, r, Command{Kind: KindHotCard, Card: body.Card, Action: body.Action, Reason: body.Reason})
	}
}

// CommandView is GET /v1/commands/{id}.
type CommandView struct {
	ID     string          `json:"id"`
	Kind   string          `json:"kind"`
	Target string          `json:"target"`
	State  string          `json:"state"` // pending until every target store applied it, then applied
	Stores []CommandResult `json:"stores"`
}

// CommandResult is one store's answer to a command.
type CommandResult struct {
	StoreID   string  `json:"store_id"`
	AppliedAt *string `json:"applied_at"`
	Result    string  `json:"result"`
}

// CommandStatus reads a command and what each store did with it;
// ok is false for an unknown id.
func (h *Hub) CommandStatus(ctx context.Context, id string) (CommandView, bool, error) {
	c := CommandView{ID: id, Stores: []CommandResult{}}
	err := h.DB.QueryRowContext(ctx, `SELECT kind, target FROM commands WHERE id = ?`, id).Scan(&c.Kind, &c.Target)
	if errors.Is(err, sql.ErrNoRows) {
		return c, false, nil
	}
	if err != nil {
		return c, false, err
	}
	rows, err := h.DB.QueryContext(ctx, `SELECT s.store_id, r.applied_at, coalesce(r.result, '') FROM stores s
		LEFT JOIN command_results r ON r.command_id = ? AND r.store_id = s.store_id
		WHERE ? = 'all' OR s.store_id = ? ORDER BY s.store_id`, id, c.Target, c.Target)
	if err != nil {
		return c, false, err
	}
	defer rows.Close()
	c.State = "applied"
	for rows.Next() {
		var r CommandResult
		var at sql.NullString
		if err := rows.Scan(&r.StoreID, &at, &r.Result); err != nil {
			return c, false, err
		}
		if at.Valid {
			r.AppliedAt = &at.String
		} else {
			c.State = "pending"
			r.Result = "pending"
		}
		c.Stores = append(c.Stores, r)
	}
	return c, true, rows.Err()
}

func (h *Hub) apiCommand(w http.ResponseWriter, r *http.Request) {
	c, ok, err := h.CommandStatus(r.Context(), r.PathValue("id"))
	if err != nil {
		h.log().Error("hq command status", "err", err)
		writeProblem(w, http.StatusInternalServerError, "internal", "internal error")
		return
	}
	if !ok {
		writeProblem(w, http.StatusNotFound, "command_not_found", "no such command")
		return
	}
	writeJSON(w, http.StatusOK, c)
}
