package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"storepay/devices"
	"storepay/migrations"
)

// Console sessions. A manager signs in with the bearer token from
// `storepay devices enroll --role manager`; storepay then hands the
// browser a session cookie, so the token is typed once and never kept by
// the browser.
//
//   - The session id is 32 random bytes; the database holds only its
//     SHA-256 (migrations/0004_console.sql).
//   - A session ends SessionLifetime after sign-in whatever happens, and
//     after SessionIdle without a request made by a person: the pages'
//     own polling (X-Console-Poll) does not keep it alive, so a dashboard
//     left open on a back-office PC signs itself out.
//   - A session is valid only while its device still holds the token that
//     opened it and the manager role: rotating a token (enrolling the name
//     again) ends its sessions at once.
//   - The cookie is HttpOnly, SameSite=Strict, Path=/console, and Secure
//     when the request came over TLS.
//   - Every state-changing request passes http.CrossOriginProtection
//     (Sec-Fetch-Site / Origin) and must carry the session's CSRF token,
//     derived from the session id (so nothing more is stored, and the
//     stored hash does not give it away).
const (
	// SessionLifetime is how long a console session lasts after sign-in,
	// whatever happens: a working day.
	SessionLifetime = 8 * time.Hour
	// SessionIdle ends a session no person has used for that long.
	SessionIdle = 30 * time.Minute
	// sessionTouch is how stale last_seen_at may get before a request
	// writes it again: a write per minute, not per page.
	sessionTouch = time.Minute

	sessionCookie = "storepay_console"
	// pollHeader marks the pages' own refresh requests.
	pollHeader = "X-Console-Poll"
	// maxFormBody bounds a console form; the largest field is a 500-char
	// reason.
	maxFormBody = 64 << 10
)

// isPoll reports whether r is a page refreshing itself (htmx's header, or
// the no-JavaScript dashboard's ?poll=1): not a person's activity.
func isPoll(r *http.Request) bool {
	return r.Header.Get(pollHeader) != "" || (r.Method == http.MethodGet && r.URL.Query().Get("poll") == "1")
}

func newSessionID() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

func sessionHash(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// csrfFor derives a session's CSRF token. The domain-separating prefix
// keeps it apart from the stored hash of the same id.
func csrfFor(id string) string {
	sum := sha256.Sum256([]byte("storepay console csrf\x00" + id))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// csrfToken is the CSRF token of the request's session, "" without one.
func csrfToken(r *http.Request) string {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return ""
	}
	return csrfFor(c.Value)
}

// openSession creates a session for a manager device, records the sign-in
// in the audit log, and deletes the session it replaces (the browser's
// previous one, if any) and every expired one, in one transaction.
func (s *Server) openSession(ctx context.Context, d devices.Device, replaces string) (string, error) {
	id, err := newSessionID()
	if err != nil {
		return "", fmt.Errorf("console session: %w", err)
	}
	now := s.now()
	err = s.db.Update(ctx, func(tx *sql.Tx) error {
		if _, err := deleteExpiredSessions(tx, now); err != nil {
			return err
		}
		if replaces != "" {
			if _, err := tx.Exec(`DELETE FROM console_sessions WHERE id_hash = ?`, sessionHash(replaces)); err != nil {
				return err
			}
		}
		// The token hash is copied from the device row, so the session
		// dies with the token; no row is written if the device lost its
		// manager role meanwhile.
		res, err := tx.Exec(`INSERT INTO console_sessions (id_hash, device_id, token_hash, created_at, last_seen_at, expires_at)
			SELECT ?, id, token_hash, ?, ?, ? FROM devices WHERE id = ? AND role = 'manager'`,
			sessionHash(id), migrations.FormatTime(now), migrations.FormatTime(now), migrations.FormatTime(now.Add(SessionLifetime)), d.ID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return errors.New("the device is no longer a manager")
		}
		return devices.Audit(tx, devices.Entry{At: now, Actor: d.Name, Action: "console.login", Target: "console"})
	})
	if err != nil {
		return "", fmt.Errorf("console session: %w", err)
	}
	return id, nil
}

// session finds the request's live session and its device. ok is false
// when there is none, it expired, or its token was rotated.
func (s *Server) session(r *http.Request) (d devices.Device, id string, ok bool, err error) {
	c, cerr := r.Cookie(sessionCookie)
	if cerr != nil || c.Value == "" || len(c.Value) > 100 {
		return devices.Device{}, "", false, nil
	}
	id = c.Value
	var created, lastSeen, expires string
	err = s.db.Read().QueryRowContext(r.Context(), `SELECT d.id, d.name, d.role, s.created_at, s.last_seen_at, s.expires_at
		FROM console_sessions s JOIN devices d ON d.id = s.device_id AND d.token_hash = s.token_hash
		WHERE s.id_hash = ?`, sessionHash(id)).Scan(&d.ID, &d.Name, &d.Role, &created, &lastSeen, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return devices.Device{}, "", false, nil
	}
	if err != nil {
		return devices.Device{}, "", false, fmt.Errorf("console session: %w", err)
	}
	now := s.now()
	exp, _ := migrations.ParseTime(expires)
	seen, _ := migrations.ParseTime(lastSeen)
	if d.Role != devices.RoleManager || !now.Before(exp) || now.Sub(seen) >= SessionIdle {
		return devices.Device{}, "", false, nil
	}
	if !isPoll(r) && now.Sub(seen) >= sessionTouch {
		err := s.db.Update(r.Context(), func(tx *sql.Tx) error {
			_, err := tx.Exec(`UPDATE console_sessions SET last_seen_at = ? WHERE id_hash = ?`, migrations.FormatTime(now), sessionHash(id))
			return err
		})
		if err != nil {
			// A full disk must not lock the manager out of the console
			// that shows it: the idle clock just runs on.
			s.log.Warn("console: session activity not recorded", "request_id", info(r).ID, "err", err)
		}
	}
	return d, id, true, nil
}

// closeSession deletes a session and records the sign-out.
func (s *Server) closeSession(ctx context.Context, id, actor string) error {
	now := s.now()
	return s.db.Update(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`DELETE FROM console_sessions WHERE id_hash = ?`, sessionHash(id)); err != nil {
			return err
		}
		return devices.Audit(tx, devices.Entry{At: now, Actor: actor, Action: "console.logout", Target: "console"})
	})
}

func setSessionCookie(w http.ResponseWriter, r *http.Request, id string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/console", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
}

// consoleAuth lets a request through only with a live session, and makes
// its manager the request's device: the actor of every action, exactly as
// a bearer token is on the JSON API. Without a session, a page asks the
// browser to sign in (and come back); a poll tells htmx to go to the
// sign-in page; a form post is refused and not carried out.
func (s *Server) consoleAuth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, _, ok, err := s.session(r)
		if err != nil {
			s.consoleInternal(w, r, err)
			return
		}
		if !ok {
			login := "/console/login?expired=1"
			switch {
			case r.Header.Get("HX-Request") != "":
				w.Header().Set("HX-Redirect", login)
				w.WriteHeader(http.StatusUnauthorized)
			case r.Method == http.MethodGet || r.Method == http.MethodHead:
				http.Redirect(w, r, "/console/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			default:
				s.renderLogin(w, r, http.StatusUnauthorized, "Your session has ended, so that action was not carried out. Sign in and try again.", "")
			}
			return
		}
		ri := info(r)
		ri.Device, ri.Authed, ri.Route = d, true, r.Pattern
		next.ServeHTTP(w, r)
	})
}

// consoleCSRF checks the session's CSRF token on every request that may
// change something. It runs after consoleAuth and after
// http.CrossOriginProtection, as a second, independent defence: a form
// that storepay did not render for this session is refused.
func (s *Server) consoleCSRF(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
		if err := r.ParseForm(); err != nil {
			s.render(w, r, http.StatusBadRequest, "error", view{Title: "Bad request", Error: "The form could not be read."})
			return
		}
		want := csrfToken(r)
		got := r.PostForm.Get("csrf")
		if want == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			s.log.Warn("console: form refused without a valid CSRF token", "request_id", info(r).ID, "path", r.URL.Path, "device", info(r).Device.Name)
			s.render(w, r, http.StatusForbidden, "error", view{Title: "Form refused",
				Error: "This form did not come from your console session (it may be from an older session). Nothing was changed. Reload the page and try again."})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// consoleCrossOrigin answers a request that http.CrossOriginProtection
// refused.
func (s *Server) consoleCrossOrigin(w http.ResponseWriter, r *http.Request) {
	s.log.Warn("console: cross-origin request refused", "request_id", info(r).ID, "path", r.URL.Path,
		"origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"))
	s.render(w, r, http.StatusForbidden, "error", view{Title: "Request refused",
		Error: "This request came from another site. Nothing was changed."})
}

type loginData struct {
	Next     string
	Message  string
	Notice   string
	Lifetime time.Duration
	Idle     time.Duration
}

func (s *Server) renderLogin(w http.ResponseWriter, r *http.Request, status int, msg, notice string) {
	s.render(w, r, status, "login", view{Title: "Sign in", Data: loginData{Next: safeNext(r.FormValue("next")),
		Message: msg, Notice: notice, Lifetime: SessionLifetime, Idle: SessionIdle}})
}

// safeNext keeps a post-login destination inside the console, so the
// sign-in page cannot be used to send a manager elsewhere.
func safeNext(next string) string {
	u, err := url.Parse(next)
	if next == "" || err != nil || u.Scheme != "" || u.Host != "" || strings.Contains(next, "\\") ||
		!strings.HasPrefix(u.Path, "/console") || strings.HasPrefix(u.Path, "/console/login") || strings.HasPrefix(next, "//") {
		return "/console"
	}
	return u.RequestURI()
}

func (s *Server) consoleLoginPage(w http.ResponseWriter, r *http.Request) {
	notice := ""
	switch {
	case r.URL.Query().Get("expired") != "":
		notice = "Your session ended. Sign in again to go on."
	case r.URL.Query().Get("bye") != "":
		notice = "You are signed out."
	}
	s.renderLogin(w, r, http.StatusOK, "", notice)
}

// consoleLogin signs a manager in. Every token that is not a manager's
// gets the same answer whether it exists or not, except a terminal's
// token, which is told plainly that terminals cannot sign in (its holder
// already knows it is valid).
func (s *Server) consoleLogin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		s.renderLogin(w, r, http.StatusBadRequest, "The form could not be read.", "")
		return
	}
	addr := clientAddr(r)
	if left, ok := s.signins.blocked(addr, s.now()); ok {
		s.log.Warn("console: sign-in refused: too many refused tokens from this address", "request_id", info(r).ID, "remote", r.RemoteAddr)
		w.Header().Set("Retry-After", strconv.Itoa(int(left.Round(time.Second)/time.Second)+1))
		s.renderLogin(w, r, http.StatusTooManyRequests, fmt.Sprintf(
			"Too many refused tokens from this computer: sign-in is closed to it for %s. Check the token and try again then.",
			left.Round(time.Minute)), "")
		return
	}
	token := strings.TrimSpace(r.PostForm.Get("token"))
	d, err := s.devices.Authenticate(r.Context(), token)
	switch {
	case errors.Is(err, devices.ErrUnknownToken):
		s.signins.refused(addr, s.now())
		s.log.Warn("console: sign-in refused", "request_id", info(r).ID, "remote", r.RemoteAddr)
		s.renderLogin(w, r, http.StatusUnauthorized, "That token was not accepted. Use a manager token (storepay devices enroll --role manager).", "")
		return
	case err != nil:
		s.consoleInternal(w, r, err)
		return
	case d.Role != devices.RoleManager:
		s.log.Warn("console: terminal token refused", "request_id", info(r).ID, "device", d.Name, "remote", r.RemoteAddr)
		s.renderLogin(w, r, http.StatusForbidden, "This is a terminal's token. Terminals cannot use the console: sign in with a manager token.", "")
		return
	}
	replaces := ""
	if c, err := r.Cookie(sessionCookie); err == nil {
		replaces = c.Value // a new sign-in never reuses the old session id
	}
	id, err := s.openSession(r.Context(), d, replaces)
	if err != nil {
		s.consoleInternal(w, r, err)
		return
	}
	s.signins.succeeded(addr)
	setSessionCookie(w, r, id, int(SessionLifetime/time.Second))
	http.Redirect(w, r, safeNext(r.PostForm.Get("next")), http.StatusSeeOther)
}

func (s *Server) consoleLogout(w http.ResponseWriter, r *http.Request) {
	_, id, ok, err := s.session(r)
	if err == nil && ok {
		err = s.closeSession(r.Context(), id, info(r).Device.Name)
	}
	if err != nil {
		s.consoleInternal(w, r, err)
		return
	}
	setSessionCookie(w, r, "", -1)
	http.Redirect(w, r, "/console/login?bye=1", http.StatusSeeOther)
}

// deleteExpiredSessions deletes the sessions past their lifetime or idle
// time: they can never be used again.
func deleteExpiredSessions(tx *sql.Tx, now time.Time) (int64, error) {
	res, err := tx.Exec(`DELETE FROM console_sessions WHERE expires_at <= ? OR last_seen_at <= ?`,
		migrations.FormatTime(now), migrations.FormatTime(now.Add(-SessionIdle)))
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// PurgeSessions deletes expired console sessions. Sign-ins do it too, but
// a store whose manager stops signing in must not keep them forever.
func (s *Server) PurgeSessions(ctx context.Context) (int64, error) {
	var n int64
	err := s.db.Update(ctx, func(tx *sql.Tx) error {
		var err error
		n, err = deleteExpiredSessions(tx, s.now())
		return err
	})
	return n, err
}
