package web

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"time"

	"github.com/google/uuid"

	"storepay/devices"
	"storepay/gateway"
)

// reqInfo is what the middleware learns of a request. It is put in the
// context once, first, and filled in place afterwards, so that no
// middleware behind otelhttp has to replace the request (which would lose
// the route pattern in traces and metrics).
type reqInfo struct {
	ID     string
	Device devices.Device
	Authed bool
	Route  string
}

type infoKey struct{}

func info(r *http.Request) *reqInfo {
	if ri, ok := r.Context().Value(infoKey{}).(*reqInfo); ok {
		return ri
	}
	return &reqInfo{}
}

// maxRequestID caps an inbound X-Request-Id: a client must not be able to
// flood the logs through it.
const maxRequestID = 255

// maxPath and maxQuery cap a request's path and query (bytes), refused
// with 414 beyond: every string from outside has a limit, these included.
// Unbounded (net/http allows a head of 1 MiB), a path is logged on the
// request's line and an id in it is echoed in a 404 that an
// Idempotency-Key then keeps. storepay's ids, names and dates are tens
// of characters; the console's longest query (a payments search) is a
// few hundred.
const (
	maxPath  = 2048
	maxQuery = 2048
)

func validRequestID(id string) bool {
	if id == "" || len(id) > maxRequestID {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x20 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

// requestInfo gives every request an id (the client's X-Request-Id when it
// sent a sane one), echoes it on the response, and logs the request when
// it ends.
func (s *Server) requestInfo(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A card number typed where an id belongs (a scanner in the wrong
		// box) must reach no log, trace, answer or stored answer: the path
		// and query are masked before anything reads them. No id storepay
		// makes looks like a card number, so nothing that exists is lost.
		if m := gateway.MaskPANs(r.URL.Path); m != r.URL.Path {
			r.URL.Path, r.URL.RawPath = m, ""
		}
		if m := gateway.MaskPANs(r.URL.RawQuery); m != r.URL.RawQuery {
			r.URL.RawQuery = m
		}
		ri := &reqInfo{ID: r.Header.Get("X-Request-Id")}
		if !validRequestID(ri.ID) || gateway.MaskPANs(ri.ID) != ri.ID {
			ri.ID = "req_" + strings.ReplaceAll(uuid.NewString(), "-", "")
		}
		w.Header().Set("X-Request-Id", ri.ID)
		sw := &statusWriter{ResponseWriter: w}
		tooLong := len(r.URL.Path) > maxPath || len(r.URL.RawQuery) > maxQuery
		if tooLong {
			// Only a bounded head of the path reaches the log line below.
			r.URL.Path = strings.ToValidUTF8(r.URL.Path[:min(len(r.URL.Path), 200)], "") + "…"
			r.URL.RawPath, r.URL.RawQuery = "", ""
		}
		start := time.Now()
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				s.log.Error("panic serving request", "request_id", ri.ID, "panic", p, "stack", string(debug.Stack()))
				if sw.status == 0 {
					writeProblem(sw, r.WithContext(context.WithValue(r.Context(), infoKey{}, ri)),
						problem(http.StatusInternalServerError, "internal_error", "an internal error occurred"))
				}
			}
			if r.URL.Path == "/healthz" || r.URL.Path == "/metrics" {
				return
			}
			lvl := slog.LevelInfo
			if sw.status >= 500 {
				lvl = slog.LevelWarn
			}
			attrs := []any{"request_id", ri.ID, "method", r.Method, "path", r.URL.Path, "route", ri.Route,
				"status", sw.status, "duration_ms", time.Since(start).Milliseconds()}
			if ri.Authed {
				attrs = append(attrs, "device", ri.Device.Name)
			}
			s.log.Log(r.Context(), lvl, "http request", attrs...)
		}()
		r = r.WithContext(context.WithValue(r.Context(), infoKey{}, ri))
		if tooLong {
			writeProblem(sw, r, problem(http.StatusRequestURITooLong, "uri_too_long",
				fmt.Sprintf("the request's path or query is too long: at most %d and %d bytes; nothing was done", maxPath, maxQuery)))
			return
		}
		next.ServeHTTP(sw, r)
	})
}

// statusWriter remembers the status written.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// authenticate requires a valid bearer token on every request it guards.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ri := info(r)
		ri.Route = r.Pattern
		token, ok := bearer(r)
		if !ok {
			w.Header().Set("WWW-Authenticate", `Bearer realm="storepay"`)
			writeProblem(w, r, problem(http.StatusUnauthorized, "unauthorized", "an Authorization: Bearer token is required"))
			return
		}
		d, err := s.devices.Authenticate(r.Context(), token)
		if errors.Is(err, devices.ErrUnknownToken) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="storepay", error="invalid_token"`)
			writeProblem(w, r, problem(http.StatusUnauthorized, "unauthorized", "the bearer token is not known"))
			return
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		ri.Device, ri.Authed = d, true
		// Last seen (time, address) for the devices page; a failed write
		// costs the page a stale line, never the request.
		if err := s.devices.Seen(r.Context(), d, remoteHost(r)); err != nil {
			s.log.Warn("device last seen", "request_id", ri.ID, "err", err)
		}
		next.ServeHTTP(w, r)
	})
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// managerOnly refuses terminal tokens (403).
func (s *Server) managerOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if info(r).Device.Role != devices.RoleManager {
			writeProblem(w, r, problem(http.StatusForbidden, "forbidden", "this route needs a manager token"))
			return
		}
		next.ServeHTTP(w, r)
	})
}
