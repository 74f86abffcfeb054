package web_test

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"storepay/devices"
	"storepay/gateway"
	"storepay/gateway/acquirer"
	"storepay/gateway/banksim"
	"storepay/migrations"
	"storepay/orders"
	"storepay/reconcile"
	"storepay/saf"
	"storepay/web"
)

const testCardKey = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

// consoleEnv is a storepay web server over a real database, a real
// router in front of a banksim, and a queue whose forwarder is off (the
// browser test in cmd/storepay covers forwarding). Its clock can be moved
// forward, for session expiry.
type consoleEnv struct {
	t        *testing.T
	url      string
	client   *http.Client
	db       *migrations.DB
	reg      *devices.Registry
	orders   *orders.Service
	queue    *saf.Queue
	router   *gateway.Router
	sim      *banksim.Sim
	manager  string
	terminal string
	srv      *web.Server
	skew     atomic.Int64
}

func (e *consoleEnv) now() time.Time          { return time.Now().Add(time.Duration(e.skew.Load())) }
func (e *consoleEnv) advance(d time.Duration) { e.skew.Add(int64(d)) }

func newConsole(t *testing.T, tlsServer bool) *consoleEnv {
	t.Helper()
	ctx := context.Background()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := migrations.Open(ctx, filepath.Join(t.TempDir(), "storepay.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e := &consoleEnv{t: t, db: db}
	e.reg = &devices.Registry{DB: db}
	if e.manager, err = e.reg.Enroll(ctx, "boss", devices.RoleManager); err != nil {
		t.Fatal(err)
	}
	if e.terminal, err = e.reg.Enroll(ctx, "lane-1", devices.RoleTerminal); err != nil {
		t.Fatal(err)
	}
	sim := banksim.New(banksim.Config{APIKey: "key-a", Logger: log})
	t.Cleanup(func() { sim.Close() })
	u, err := sim.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.sim = sim
	e.router, err = gateway.NewRouter([]gateway.BankSpec{{Name: "bank-a", Policy: gateway.Policy{ProbeInterval: -1},
		Endpoints: []gateway.Endpoint{acquirer.New(acquirer.Config{BaseURL: u, APIKey: "key-a", MerchantID: "store-042", Gateway: "bank-a"})}}}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.router.Close)
	key, _ := gateway.ParseCardKey(testCardKey)
	vault, err := gateway.NewVault(key)
	if err != nil {
		t.Fatal(err)
	}
	e.orders = &orders.Service{DB: db, Bank: e.router, Vault: vault, Log: log}
	e.queue = &saf.Queue{DB: db, Vault: vault, Bank: e.router, Payments: e.orders, Log: log,
		Rules:   saf.Rules{FloorLimit: 10000, TotalLimit: 500000, MaxAge: 72 * time.Hour},
		Forward: saf.ForwardPolicy{Interval: -1}}
	e.orders.Offline = e.queue
	srv := web.New(web.Config{DB: db, Orders: e.orders, Devices: e.reg, Router: e.router, SAF: e.queue, Log: log, Now: e.now})
	e.srv = srv
	var ts *httptest.Server
	if tlsServer {
		ts = httptest.NewTLSServer(srv.Handler())
		e.client = ts.Client()
	} else {
		ts = httptest.NewServer(srv.Handler())
		e.client = &http.Client{}
	}
	t.Cleanup(ts.Close)
	e.url = ts.URL
	e.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	e.client.Timeout = 30 * time.Second
	return e
}

type answer struct {
	status int
	header http.Header
	body   string
}

func (a answer) cookie(name string) *http.Cookie {
	for _, c := range (&http.Response{Header: a.header}).Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// do sends a request with the session cookie (if any) and, for a form,
// the form. Headers are added as given.
func (e *consoleEnv) do(method, path, session string, form url.Values, headers ...string) answer {
	e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if session != "" {
		req.AddCookie(&http.Cookie{Name: "storepay_console", Value: session})
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return answer{status: res.StatusCode, header: res.Header, body: string(b)}
}

func (e *consoleEnv) get(path, session string) answer { return e.do("GET", path, session, nil) }

// login signs in with token and returns the session cookie's value.
func (e *consoleEnv) login(token string) string {
	e.t.Helper()
	a := e.do("POST", "/console/login", "", url.Values{"token": {token}})
	if a.status != http.StatusSeeOther {
		e.t.Fatalf("login: status %d, want 303: %s", a.status, a.body)
	}
	c := a.cookie("storepay_console")
	if c == nil || c.Value == "" {
		e.t.Fatalf("login set no session cookie: %v", a.header)
	}
	return c.Value
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the CSRF token from a page's form, as a browser would send it.
func (e *consoleEnv) csrf(session, path string) string {
	e.t.Helper()
	a := e.get(path, session)
	m := csrfRE.FindStringSubmatch(a.body)
	if m == nil {
		e.t.Fatalf("no CSRF token in %s (%d): %s", path, a.status, a.body)
	}
	return html.UnescapeString(m[1])
}

// post sends a console form with the page's CSRF token.
func (e *consoleEnv) post(session, formPage, path string, form url.Values) answer {
	e.t.Helper()
	form.Set("csrf", e.csrf(session, formPage))
	return e.do("POST", path, session, form)
}

func wantStatus(t *testing.T, a answer, status int) {
	t.Helper()
	if a.status != status {
		t.Fatalf("status %d, want %d: %.2000s", a.status, status, a.body)
	}
}

func (e *consoleEnv) audit() []devices.Entry {
	e.t.Helper()
	entries, err := devices.AuditLog(context.Background(), e.db, devices.AuditFilter{})
	if err != nil {
		e.t.Fatal(err)
	}
	return entries
}

// storedPayment takes a card payment offline (force_offline) and returns
// it with its queue record.
func (e *consoleEnv) storedPayment(amount int64, pan string) (orders.Payment, saf.Record) {
	e.t.Helper()
	ctx := context.Background()
	o, err := e.orders.CreateOrder(ctx, orders.NewOrder{Channel: orders.WalkIn, Currency: "USD", TerminalID: "lane-1",
		Lines: []orders.Line{{SKU: "ITEM", Description: "item", Quantity: 1, UnitAmount: amount}}})
	if err != nil {
		e.t.Fatal(err)
	}
	p, err := e.orders.Pay(ctx, orders.PayRequest{OrderID: o.ID, TerminalID: "lane-1", Method: orders.Card, Amount: amount,
		Currency: "USD", Card: &gateway.Card{PAN: pan, ExpMonth: 12, ExpYear: 2030}, OfflineBehavior: orders.ForceOffline})
	if err != nil || p.Status != orders.Stored {
		e.t.Fatalf("offline payment: %+v, %v", p, err)
	}
	rec, err := e.queue.RecordForPayment(ctx, p.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return p, rec
}

func TestConsoleWithoutSessionShowsTheSignInForm(t *testing.T) {
	e := newConsole(t, false)
	a := e.get("/console", "")
	wantStatus(t, a, http.StatusOK)
	if ct := a.header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Fatalf("content type %q", ct)
	}
	if !strings.Contains(a.body, `name="token"`) || !strings.Contains(a.body, `type="password"`) {
		t.Fatalf("GET /console without a session is not the sign-in form: %s", a.body)
	}
	for _, h := range []string{"Content-Security-Policy", "X-Frame-Options", "Cache-Control"} {
		if a.header.Get(h) == "" {
			t.Errorf("console page without %s", h)
		}
	}
	// Any other page sends the browser to sign in, and back afterwards.
	a = e.get("/console/saf?status=held", "")
	wantStatus(t, a, http.StatusSeeOther)
	loc := a.header.Get("Location")
	if loc != "/console/login?next="+url.QueryEscape("/console/saf?status=held") {
		t.Fatalf("redirect to %q", loc)
	}
	back := e.do("POST", "/console/login", "", url.Values{"token": {e.manager}, "next": {"/console/saf?status=held"}})
	wantStatus(t, back, http.StatusSeeOther)
	if got := back.header.Get("Location"); got != "/console/saf?status=held" {
		t.Fatalf("after sign-in went to %q", got)
	}
	for _, next := range []string{"//evil.example/x", "https://evil.example/console", "/v1/saf", "/console\\@evil", "/console/login?next=x"} {
		a := e.do("POST", "/console/login", "", url.Values{"token": {e.manager}, "next": {next}})
		if got := a.header.Get("Location"); got != "/console" {
			t.Errorf("next=%q sent the manager to %q, want /console", next, got)
		}
	}
}

func TestConsoleSessionCookie(t *testing.T) {
	for _, tc := range []struct {
		name       string
		tls        bool
		wantSecure bool
	}{
		{"PlainHTTPOnLoopback", false, false},
		{"SecureOverTLS", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newConsole(t, tc.tls)
			a := e.do("POST", "/console/login", "", url.Values{"token": {e.manager}})
			wantStatus(t, a, http.StatusSeeOther)
			c := a.cookie("storepay_console")
			if c == nil {
				t.Fatal("no session cookie")
			}
			if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/console" || c.Secure != tc.wantSecure {
				t.Fatalf("cookie %s: want HttpOnly, SameSite=Strict, Path=/console, Secure=%v", a.header.Get("Set-Cookie"), tc.wantSecure)
			}
			if c.MaxAge <= 0 || c.MaxAge > int(web.SessionLifetime/time.Second) {
				t.Fatalf("cookie Max-Age %d", c.MaxAge)
			}
			if c.Value == e.manager || strings.Contains(c.Value, e.manager) {
				t.Fatal("the cookie carries the manager token")
			}
			// Only a hash of the session id is stored.
			var stored string
			if err := e.db.Read().QueryRow(`SELECT id_hash FROM console_sessions`).Scan(&stored); err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256([]byte(c.Value))
			if stored != hex.EncodeToString(sum[:]) {
				t.Fatalf("stored %q, want the SHA-256 of the session id", stored)
			}
			var n int
			e.db.Read().QueryRow(`SELECT count(*) FROM console_sessions WHERE id_hash = ?`, c.Value).Scan(&n)
			if n != 0 {
				t.Fatal("the session id is stored in clear")
			}
			dash := e.get("/console", c.Value)
			wantStatus(t, dash, http.StatusOK)
			if !strings.Contains(dash.body, "Signed in as <strong>boss</strong>") || !strings.Contains(dash.body, `data-bank="bank-a"`) {
				t.Fatalf("dashboard after sign-in: %s", dash.body)
			}
			if got := e.audit()[0]; got.Action != "console.login" || got.Actor != "boss" {
				t.Fatalf("sign-in not audited: %+v", got)
			}
		})
	}
}

func TestConsoleRefusesEveryTokenButAManagers(t *testing.T) {
	e := newConsole(t, false)
	t.Run("TerminalTokenIsToldWhy", func(t *testing.T) {
		a := e.do("POST", "/console/login", "", url.Values{"token": {e.terminal}})
		wantStatus(t, a, http.StatusForbidden)
		if !strings.Contains(a.body, "terminal&#39;s token") || a.cookie("storepay_console") != nil {
			t.Fatalf("terminal sign-in: %s", a.body)
		}
	})
	t.Run("UnknownTokensAllLookTheSame", func(t *testing.T) {
		var first string
		for i, tok := range []string{"sp_" + strings.Repeat("A", 43), "nonsense", "", strings.Repeat("x", 5000), e.manager + "x"} {
			a := e.do("POST", "/console/login", "", url.Values{"token": {tok}})
			wantStatus(t, a, http.StatusUnauthorized)
			if a.cookie("storepay_console") != nil {
				t.Fatal("a session for an unknown token")
			}
			if i == 0 {
				first = a.body
			} else if a.body != first {
				t.Fatalf("token %d answered differently:\n%s\n---\n%s", i, a.body, first)
			}
		}
	})
	t.Run("BearerTokenIsNotASession", func(t *testing.T) {
		a := e.do("GET", "/console/saf", "", nil, "Authorization", "Bearer "+e.manager)
		wantStatus(t, a, http.StatusSeeOther)
	})
}

// Ten refused tokens from one address close sign-in to it for the rest
// of a five-minute window, even for the right token; a terminal's token
// is no guess and does not count; a manager who signs in clears the count.
func TestConsoleThrottlesRefusedSignIns(t *testing.T) {
	e := newConsole(t, false)
	try := func(tok string) answer { return e.do("POST", "/console/login", "", url.Values{"token": {tok}}) }
	for range 3 {
		wantStatus(t, try(e.terminal), http.StatusForbidden)
	}
	for i := range 9 {
		wantStatus(t, try(fmt.Sprintf("sp_guess%d", i)), http.StatusUnauthorized)
	}
	e.login(e.manager) // the ninth refusal left one: a sign-in clears them
	for i := range 10 {
		wantStatus(t, try(fmt.Sprintf("sp_guess%d", i)), http.StatusUnauthorized)
	}
	a := try(e.manager)
	wantStatus(t, a, http.StatusTooManyRequests)
	if a.cookie("storepay_console") != nil || !strings.Contains(a.body, "Too many refused tokens") {
		t.Fatalf("a closed address signed in or was not told why: %s", a.body)
	}
	if ra, err := strconv.Atoi(a.header.Get("Retry-After")); err != nil || ra < 1 || ra > 301 {
		t.Fatalf("Retry-After %q", a.header.Get("Retry-After"))
	}
	e.advance(4 * time.Minute)
	wantStatus(t, try(e.manager), http.StatusTooManyRequests)
	e.advance(time.Minute)
	e.login(e.manager)
}

func TestConsoleSessionsExpire(t *testing.T) {
	e := newConsole(t, false)
	t.Run("IdleExpiry", func(t *testing.T) {
		s := e.login(e.manager)
		for i := 0; i < 3; i++ { // activity keeps it alive past SessionIdle
			e.advance(web.SessionIdle - 2*time.Minute)
			wantStatus(t, e.get("/console/saf", s), http.StatusOK)
		}
		e.advance(web.SessionIdle)
		a := e.get("/console/saf", s)
		wantStatus(t, a, http.StatusSeeOther)
		if !strings.HasPrefix(a.header.Get("Location"), "/console/login") {
			t.Fatalf("expired session sent to %q", a.header.Get("Location"))
		}
	})
	t.Run("PollingDoesNotKeepItAlive", func(t *testing.T) {
		s := e.login(e.manager)
		for i := 0; i < 2; i++ {
			e.advance(web.SessionIdle / 3)
			a := e.do("GET", "/console", s, nil, "HX-Request", "true", "X-Console-Poll", "1")
			wantStatus(t, a, http.StatusOK)
		}
		e.advance(web.SessionIdle / 2)
		a := e.do("GET", "/console", s, nil, "HX-Request", "true", "X-Console-Poll", "1")
		if a.status != http.StatusUnauthorized || !strings.HasPrefix(a.header.Get("HX-Redirect"), "/console/login") {
			t.Fatalf("a poll after the idle time: %d %v", a.status, a.header)
		}
	})
	t.Run("NoScriptRefreshDoesNotKeepItAlive", func(t *testing.T) {
		s := e.login(e.manager)
		if page := e.get("/console", s); !strings.Contains(page.body, `url=/console?poll=1`) {
			t.Fatalf("the dashboard's no-JavaScript refresh is not marked as a poll: %s", page.body)
		}
		for i := 0; i < 2; i++ {
			e.advance(web.SessionIdle / 3)
			wantStatus(t, e.get("/console?poll=1", s), http.StatusOK)
		}
		e.advance(web.SessionIdle / 2)
		if a := e.get("/console?poll=1", s); !strings.Contains(a.body, `name="token"`) {
			t.Fatalf("after the idle time with only refreshes, the dashboard is not the sign-in form: %d %s", a.status, a.body)
		}
	})
	t.Run("AbsoluteExpiry", func(t *testing.T) {
		s := e.login(e.manager)
		for elapsed := time.Duration(0); elapsed < web.SessionLifetime-web.SessionIdle; elapsed += web.SessionIdle / 2 {
			wantStatus(t, e.get("/console/estop", s), http.StatusOK)
			e.advance(web.SessionIdle / 2)
		}
		e.advance(web.SessionIdle)
		wantStatus(t, e.get("/console/estop", s), http.StatusSeeOther)
	})
	t.Run("ExpiredSessionCannotAct", func(t *testing.T) {
		s := e.login(e.manager)
		token := e.csrf(s, "/console/estop")
		e.advance(web.SessionLifetime)
		a := e.do("POST", "/console/estop", s, url.Values{"csrf": {token}, "state": {"stop"}, "reason": {"late"}})
		wantStatus(t, a, http.StatusUnauthorized)
		if st := e.queue.EStop(context.Background()).State; st != saf.Go {
			t.Fatalf("an expired session changed the emergency stop to %s", st)
		}
	})
	t.Run("RotatedTokenEndsItsSessions", func(t *testing.T) {
		s := e.login(e.manager)
		wantStatus(t, e.get("/console", s), http.StatusOK)
		newToken, err := e.reg.Enroll(context.Background(), "boss", devices.RoleManager)
		if err != nil {
			t.Fatal(err)
		}
		if a := e.get("/console/saf", s); a.status != http.StatusSeeOther {
			t.Fatalf("a session outlived its token's rotation: %d", a.status)
		}
		e.manager = newToken
	})
}

func TestConsoleLogout(t *testing.T) {
	e := newConsole(t, false)
	s := e.login(e.manager)
	t.Run("RefusedWithoutCSRFToken", func(t *testing.T) {
		wantStatus(t, e.do("POST", "/console/logout", s, url.Values{}), http.StatusForbidden)
		wantStatus(t, e.get("/console/saf", s), http.StatusOK)
	})
	a := e.post(s, "/console", "/console/logout", url.Values{})
	wantStatus(t, a, http.StatusSeeOther)
	if a.header.Get("Location") != "/console/login?bye=1" {
		t.Fatalf("logout went to %q", a.header.Get("Location"))
	}
	if c := a.cookie("storepay_console"); c == nil || c.MaxAge >= 0 || c.Path != "/console" {
		t.Fatalf("logout did not clear the cookie: %v", a.header.Values("Set-Cookie"))
	}
	// The old cookie, replayed, is worth nothing: the session is gone.
	wantStatus(t, e.get("/console/saf", s), http.StatusSeeOther)
	var n int
	e.db.Read().QueryRow(`SELECT count(*) FROM console_sessions`).Scan(&n)
	if n != 0 {
		t.Fatalf("%d sessions left after logout", n)
	}
	if got := e.audit()[0]; got.Action != "console.logout" || got.Actor != "boss" {
		t.Fatalf("logout not audited: %+v", got)
	}
}

func TestConsoleCSRF(t *testing.T) {
	e := newConsole(t, false)
	s := e.login(e.manager)
	other := e.login(e.manager) // a second session of the same manager
	estop := func() saf.EStopState { return e.queue.EStop(context.Background()).State }
	for _, tc := range []struct {
		name    string
		form    url.Values
		headers []string
	}{
		{"NoToken", url.Values{"state": {"stop"}, "reason": {"x"}}, nil},
		{"WrongToken", url.Values{"state": {"stop"}, "reason": {"x"}, "csrf": {"AAAA"}}, nil},
		{"AnotherSessionsToken", url.Values{"state": {"stop"}, "reason": {"x"}, "csrf": {e.csrf(other, "/console/estop")}}, nil},
		{"CrossSiteWithValidToken", url.Values{"state": {"stop"}, "reason": {"x"}, "csrf": {e.csrf(s, "/console/estop")}},
			[]string{"Sec-Fetch-Site", "cross-site"}},
		{"ForeignOriginWithValidToken", url.Values{"state": {"stop"}, "reason": {"x"}, "csrf": {e.csrf(s, "/console/estop")}},
			[]string{"Origin", "http://evil.example"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := e.do("POST", "/console/estop", s, tc.form, tc.headers...)
			wantStatus(t, a, http.StatusForbidden)
			if estop() != saf.Go {
				t.Fatal("the refused form changed the emergency stop")
			}
		})
	}
	t.Run("LoginFromAnotherSite", func(t *testing.T) {
		a := e.do("POST", "/console/login", "", url.Values{"token": {e.manager}}, "Sec-Fetch-Site", "cross-site")
		wantStatus(t, a, http.StatusForbidden)
	})
	t.Run("SameOriginWithToken", func(t *testing.T) {
		form := url.Values{"state": {"pause"}, "reason": {"count the till"}, "csrf": {e.csrf(s, "/console/estop")}}
		a := e.do("POST", "/console/estop", s, form, "Sec-Fetch-Site", "same-origin", "Origin", e.url)
		wantStatus(t, a, http.StatusSeeOther)
		if estop() != saf.Pause {
			t.Fatalf("emergency stop %s, want pause", estop())
		}
		got := e.audit()[0]
		if got.Action != "estop.pause" || got.Actor != "boss" || got.Reason != "count the till" {
			t.Fatalf("audit entry %+v", got)
		}
	})
}

// The console's actions are the manager API's: the same domain calls,
// the same audit entries, with the signed-in manager as the actor.
func TestConsoleActionsAreAuditedAsTheManager(t *testing.T) {
	e := newConsole(t, false)
	s := e.login(e.manager)
	_, r1 := e.storedPayment(400, "4242424242424242")
	_, r2 := e.storedPayment(600, "4000056655665556")
	recPage := "/console/saf/" + r1.ID

	wantStatus(t, e.post(s, recPage, recPage+"/hold", url.Values{"reason": {"customer disputes"}}), http.StatusSeeOther)
	page := e.get(recPage+"?done=hold", s)
	if !strings.Contains(page.body, `data-status="held"`) || !strings.Contains(page.body, "Held: the record") {
		t.Fatalf("record after hold: %s", page.body)
	}
	a := e.post(s, recPage, recPage+"/hold", url.Values{"reason": {""}})
	wantStatus(t, a, http.StatusBadRequest)
	a = e.post(s, "/console/saf/"+r2.ID, "/console/saf/"+r2.ID+"/release", url.Values{"reason": {"not held"}})
	wantStatus(t, a, http.StatusConflict)
	if !strings.Contains(a.body, "not held") {
		t.Fatalf("conflict page: %s", a.body)
	}
	wantStatus(t, e.post(s, recPage, recPage+"/release", url.Values{"reason": {"resolved"}}), http.StatusSeeOther)

	confirm := e.get("/console/saf/replay-all", s)
	wantStatus(t, confirm, http.StatusOK)
	if !strings.Contains(confirm.body, `data-count="2"`) || !strings.Contains(confirm.body, `data-amount="1000"`) ||
		!strings.Contains(confirm.body, "2 records, 10.00 USD in all") {
		t.Fatalf("the confirmation does not say what it touches: %s", confirm.body)
	}
	a = e.post(s, "/console/saf/replay-all", "/console/saf/replay-all", url.Values{"reason": {"bank is back"}})
	wantStatus(t, a, http.StatusSeeOther)
	if loc := a.header.Get("Location"); loc != "/console/saf?done=replay_all" {
		t.Fatalf("replay all went to %q", loc)
	}
	if page := e.get(a.header.Get("Location"), s); !strings.Contains(page.body, "Replayed the queue") {
		t.Fatalf("queue after replay all: %s", page.body)
	}
	// No figure from a URL is shown as what was done.
	if page := e.get("/console/saf?done=replay_all&n=4812&amount=1250000", s); strings.Contains(page.body, "4812") {
		t.Fatalf("the queue page repeats a figure from its URL: %s", page.body)
	}

	wantStatus(t, e.post(s, "/console/banks", "/console/banks/bank-a/disable", url.Values{"reason": {"wrong API key"}}), http.StatusSeeOther)
	if st := e.router.Statuses()[0].State; st != "disabled" {
		t.Fatalf("bank state %s after disable", st)
	}
	wantStatus(t, e.post(s, "/console/banks", "/console/banks/bank-a/enable", url.Values{"reason": {"key fixed"}}), http.StatusSeeOther)
	wantStatus(t, e.post(s, "/console/banks", "/console/banks/bank-z/enable", url.Values{"reason": {"x"}}), http.StatusNotFound)
	// Anything unreadable counts as stop, as on the API; going again needs
	// a reason, stopping does not.
	wantStatus(t, e.post(s, "/console/estop", "/console/estop", url.Values{"state": {"halt"}, "reason": {"x"}}), http.StatusSeeOther)
	if st := e.queue.EStop(context.Background()).State; st != saf.Stop {
		t.Fatalf("emergency stop after an unreadable state: %s", st)
	}
	wantStatus(t, e.post(s, "/console/estop", "/console/estop", url.Values{"state": {"go"}, "reason": {""}}), http.StatusBadRequest)
	wantStatus(t, e.post(s, "/console/estop", "/console/estop", url.Values{"state": {"pause"}, "reason": {""}}), http.StatusSeeOther)
	wantStatus(t, e.post(s, "/console/estop", "/console/estop", url.Values{"state": {"stop"}, "reason": {"fraud alert"}}), http.StatusSeeOther)

	var got []string
	for _, en := range e.audit() {
		// The devices were enrolled by the test's setup (Enroll: actor
		// storepay); everything done in the console is the manager's.
		if en.Actor != "boss" && (en.Action != "device.enroll" || en.Actor != "storepay") {
			t.Errorf("entry %+v is not by the signed-in manager", en)
		}
		got = append([]string{en.Action + ":" + en.Target + ":" + en.Reason}, got...)
	}
	want := []string{"device.enroll:boss:", "device.enroll:lane-1:", "console.login:console:", "saf.hold:" + r1.ID + ":customer disputes", "saf.release:" + r1.ID + ":resolved",
		"saf.replay_all:saf:bank is back", "gateway.disable:bank-a:wrong API key", "gateway.enable:bank-a:key fixed",
		`estop.stop:estop:unreadable request taken as stop (state "halt" is not go, pause or stop)`,
		"estop.pause:estop:no reason given", "estop.stop:estop:fraud alert"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("audit log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	page = e.get("/console/audit", s)
	if !strings.Contains(page.body, "customer disputes") || !strings.Contains(page.body, "gateway.enable") {
		t.Fatalf("audit page: %s", page.body)
	}
	page = e.get("/console/estop", s)
	if !strings.Contains(page.body, `data-state="stop"`) || !strings.Contains(page.body, "fraud alert") {
		t.Fatalf("estop page: %s", page.body)
	}
}

func TestConsolePagesRender(t *testing.T) {
	e := newConsole(t, false)
	s := e.login(e.manager)
	p, rec := e.storedPayment(1250, "4242424242424242")
	for _, path := range []string{"/console", "/console/saf", "/console/saf?status=queued&bank=bank-a", "/console/saf/" + rec.ID,
		"/console/saf/replay-all", "/console/estop", "/console/payments", "/console/payments?last4=4242",
		"/console/payments?q=" + p.OrderID, "/console/payments/" + p.ID, "/console/orders/" + p.OrderID, "/console/banks",
		"/console/audit", "/console/audit?action=console.login", "/console/reconciliation"} {
		t.Run(path, func(t *testing.T) {
			a := e.get(path, s)
			wantStatus(t, a, http.StatusOK)
			if !strings.Contains(a.body, "</html>") || !strings.Contains(a.body, "Sign out") {
				t.Fatalf("not a whole console page: %s", a.body)
			}
		})
	}
	for _, path := range []string{"/console/saf/saf_nope", "/console/payments/pay_nope", "/console/orders/ord_nope", "/console/nope"} {
		t.Run(path, func(t *testing.T) {
			wantStatus(t, e.get(path, s), http.StatusNotFound)
		})
	}
	wantStatus(t, e.get("/console/saf?status=bogus", s), http.StatusBadRequest)
	if a := e.get("/console/payments?q="+rec.ID, s); a.status != http.StatusSeeOther || a.header.Get("Location") != "/console/saf/"+rec.ID {
		t.Fatalf("searching a record id: %d %s", a.status, a.header.Get("Location"))
	}
	if a := e.get("/console/payments?last4=4242", s); !strings.Contains(a.body, `data-payment="`+p.ID+`"`) {
		t.Fatalf("search by last4 did not find the payment: %s", a.body)
	}
	if a := e.get("/console/payments?terminal=lane-9", s); strings.Contains(a.body, `data-payment="`) {
		t.Fatal("search by another terminal found payments")
	}
}

func TestConsoleNeverShowsAFullCardNumber(t *testing.T) {
	e := newConsole(t, false)
	s := e.login(e.manager)
	const pan = "4242424242424242"
	p, rec := e.storedPayment(900, pan)
	for _, path := range []string{"/console", "/console/saf", "/console/saf/" + rec.ID, "/console/payments",
		"/console/payments/" + p.ID, "/console/orders/" + p.OrderID, "/console/audit",
		"/console/payments?last4=" + pan, "/console/payments?q=" + pan, "/console/payments?terminal=4242+4242+4242+4242"} {
		a := e.get(path, s)
		if strings.Contains(a.body, pan) || strings.Contains(a.body, "424242424242") || strings.Contains(a.body, "4242 4242 4242 4242") {
			t.Errorf("%s shows a card number", path)
		}
	}
	a := e.get("/console/payments?last4="+pan, s)
	wantStatus(t, a, http.StatusBadRequest)
	if !strings.Contains(a.body, "last four digits") {
		t.Fatalf("a full number in the last-4 field: %s", a.body)
	}
	if a := e.get("/console/saf/"+rec.ID, s); !strings.Contains(a.body, "•••• 4242") {
		t.Fatalf("the record does not show the last four digits: %s", a.body)
	}
}

// The reconciliation page reads what `storepay reconcile` saved: a date
// never reconciled says so; a reconciled one shows its summary and its
// items by category.
func TestConsoleReconciliation(t *testing.T) {
	clearOfMidnight(t, 30*time.Second) // the payments must fall on the day reconciled
	e := newConsole(t, false)
	s := e.login(e.manager)
	ctx := context.Background()
	today := time.Now().UTC().Format(time.DateOnly)

	a := e.get("/console/reconciliation?date="+today, s)
	wantStatus(t, a, http.StatusOK)
	if !strings.Contains(a.body, `id="reconciliation-none"`) {
		t.Fatalf("a date never reconciled: %s", a.body)
	}
	wantStatus(t, e.get("/console/reconciliation?date=2026-13-01", s), http.StatusBadRequest)

	o, err := e.orders.CreateOrder(ctx, orders.NewOrder{Channel: orders.WalkIn, Currency: "USD", TerminalID: "lane-1",
		Lines: []orders.Line{{SKU: "ITEM", Description: "item", Quantity: 1, UnitAmount: 1500}}})
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.orders.Pay(ctx, orders.PayRequest{OrderID: o.ID, TerminalID: "lane-1", Method: orders.Card, Amount: 1500,
		Currency: "USD", Card: &gateway.Card{PAN: "4242424242424242", ExpMonth: 12, ExpYear: 2030}})
	if err != nil || p.Status != orders.Captured {
		t.Fatalf("online sale: %+v %v", p, err)
	}
	_, rec := e.storedPayment(800, "4000056655665556") // not forwarded: the forwarder is off
	if err := e.sim.CloseDay(today); err != nil {
		t.Fatal(err)
	}
	report, ok := e.sim.Settlement("", today)
	if !ok {
		t.Fatal("banksim has no report for today")
	}
	res, err := reconcile.Reconcile(ctx, e.db, reconcile.Input{Date: today,
		Sources: []reconcile.Source{reconcile.BytesSource("bank-a", "", "banksim", report)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := reconcile.Save(ctx, e.db, res); err != nil {
		t.Fatal(err)
	}

	a = e.get("/console/reconciliation", s) // the latest night by default
	wantStatus(t, a, http.StatusOK)
	for _, want := range []string{`id="report" data-date="` + today + `" data-status="discrepancies"`,
		`data-category="matched" data-count="1"`, `data-category="not_forwarded" data-count="1"`,
		`href="/console/payments/` + p.ID + `"`, `href="/console/payments/` + rec.PaymentID + `"`, `data-date="` + today + `"`} {
		if !strings.Contains(a.body, want) {
			t.Errorf("the reconciliation page lacks %s", want)
		}
	}
	a = e.get("/console/reconciliation?date="+today+"&category=not_forwarded", s)
	wantStatus(t, a, http.StatusOK)
	if strings.Contains(a.body, `<table data-category="matched">`) || !strings.Contains(a.body, `<table data-category="not_forwarded">`) {
		t.Fatalf("one category's list: %s", a.body)
	}
	wantStatus(t, e.get("/console/reconciliation?date="+today+"&category=bogus", s), http.StatusBadRequest)
}

func TestConsoleStaticAssets(t *testing.T) {
	e := newConsole(t, false)
	login := e.get("/console", "").body
	for _, name := range []string{"htmx.min.js", "console.css"} {
		m := regexp.MustCompile(`/console/static/` + regexp.QuoteMeta(name) + `\?v=[0-9a-f]+`).FindString(login)
		if m == "" {
			t.Fatalf("the page does not link %s with a version", name)
		}
		a := e.get(m, "")
		wantStatus(t, a, http.StatusOK)
		if cc := a.header.Get("Cache-Control"); !strings.Contains(cc, "max-age=31536000") {
			t.Errorf("%s Cache-Control %q", name, cc)
		}
	}
	if a := e.get("/console/static/htmx.min.js", ""); !strings.Contains(a.body, `version:"2.0.11"`) {
		t.Error("the vendored htmx is not 2.0.11")
	}
	for _, path := range []string{"/console/static/htmx.LICENSE", "/console/static/", "/console/static/../console.go"} {
		if a := e.get(path, ""); a.status == http.StatusOK {
			t.Errorf("%s served", path)
		}
	}
}

// 10,000 queued records: the queue page holds one page of 50, pages
// through by its own links, and stays fast.
func TestConsoleQueuePaginatesTenThousandRecords(t *testing.T) {
	e := newConsole(t, false)
	s := e.login(e.manager)
	// The page is timed over an empty queue too, for the log. The bound
	// is loose on purpose: a page takes about 10 ms here, but 30 times
	// that under -race (SQLite is Go code there too) on a busy machine.
	timed := func(path string) (answer, time.Duration) {
		var best time.Duration
		var a answer
		for i := 0; i < 3; i++ {
			start := time.Now()
			a = e.get(path, s)
			if d := time.Since(start); i == 0 || d < best {
				best = d
			}
			wantStatus(t, a, http.StatusOK)
		}
		return a, best
	}
	_, empty := timed("/console/saf?status=queued")
	const n = 10_000
	taken := fillQueue(t, e.db, n)

	a, first := timed("/console/saf?status=queued")
	rows := regexp.MustCompile(`data-record="(saf_[0-9]+)"`).FindAllStringSubmatch(a.body, -1)
	if len(rows) != 50 || rows[0][1] != "saf_00000" || rows[49][1] != "saf_00049" {
		t.Fatalf("page 1 holds %d rows (%v…), want saf_00000..saf_00049", len(rows), rows[:min(len(rows), 1)])
	}
	if !strings.Contains(a.body, "Records 1–50 of 10000") || !strings.Contains(a.body, "Page 1 of 200") {
		t.Fatalf("page 1 summary missing: %s", a.body)
	}
	next := regexp.MustCompile(`id="page-next" rel="next" href="([^"]+)"`).FindStringSubmatch(a.body)
	if next == nil {
		t.Fatal("no next link on page 1")
	}
	a = e.get(html.UnescapeString(next[1]), s)
	rows = regexp.MustCompile(`data-record="(saf_[0-9]+)"`).FindAllStringSubmatch(a.body, -1)
	if len(rows) != 50 || rows[0][1] != "saf_00050" {
		t.Fatalf("the next link led to %d rows starting %v", len(rows), rows[:min(len(rows), 1)])
	}
	a, last := timed("/console/saf?status=queued&page=200")
	rows = regexp.MustCompile(`data-record="(saf_[0-9]+)"`).FindAllStringSubmatch(a.body, -1)
	if len(rows) != 50 || rows[49][1] != "saf_09999" || strings.Contains(a.body, `id="page-next"`) || !strings.Contains(a.body, `id="page-prev"`) {
		t.Fatalf("last page: %d rows, next link %v", len(rows), strings.Contains(a.body, `id="page-next"`))
	}
	if len(a.body) > 64<<10 {
		t.Fatalf("a page of 50 records is %d bytes", len(a.body))
	}
	t.Logf("queue page over an empty queue %s; over 10,000 records: page 1 %s, page 200 %s (%d bytes)", empty, first, last, len(a.body))
	if limit := 3 * time.Second; first > limit || last > limit {
		t.Fatalf("with 10,000 records the queue pages took %s and %s, over %s", first, last, limit)
	}
	if dash := e.get("/console", s); !strings.Contains(dash.body, `data-depth="10000"`) {
		t.Fatal("the dashboard does not show the queue depth")
	}
	if confirm := e.get("/console/saf/replay-all", s); !strings.Contains(confirm.body, `data-count="10000"`) {
		t.Fatal("the replay-all confirmation does not count the whole queue")
	}

	// Their payments page newest first, by keyset, 50 at a time.
	payRE := regexp.MustCompile(`data-payment="(pay_[0-9]+)"`)
	a = e.get("/console/payments?last4=4242", s)
	rows = payRE.FindAllStringSubmatch(a.body, -1)
	if len(rows) != 50 || rows[0][1] != "pay_09999" || rows[49][1] != "pay_09950" {
		t.Fatalf("payments page 1: %d rows %v…", len(rows), rows[:min(len(rows), 1)])
	}
	next = regexp.MustCompile(`id="payments-next" rel="next" href="([^"]+)"`).FindStringSubmatch(a.body)
	if next == nil {
		t.Fatal("no link to older payments")
	}
	a = e.get(html.UnescapeString(next[1]), s)
	rows = payRE.FindAllStringSubmatch(a.body, -1)
	if len(rows) != 50 || rows[0][1] != "pay_09949" || !strings.Contains(a.body, "← Newest") {
		t.Fatalf("payments page 2: %d rows %v…", len(rows), rows[:min(len(rows), 1)])
	}
	// By time: the fixture's payments are a millisecond apart, so their
	// first second holds the first thousand.
	from, to := taken.Local().Format("2006-01-02T15:04:05"), taken.Add(time.Second).Local().Format("2006-01-02T15:04:05")
	a = e.get("/console/payments?"+url.Values{"from": {from}, "to": {to}}.Encode(), s)
	rows = payRE.FindAllStringSubmatch(a.body, -1)
	if len(rows) != 50 || rows[0][1] != "pay_00999" {
		t.Fatalf("payments in [%s, %s): %d rows %v…", from, to, len(rows), rows[:min(len(rows), 1)])
	}
	a = e.get("/console/payments?from="+url.QueryEscape(time.Now().Add(time.Hour).Local().Format("2006-01-02T15:04")), s)
	if payRE.MatchString(a.body) {
		t.Fatal("payments found from an hour ahead")
	}
	wantStatus(t, e.get("/console/payments?from=yesterday", s), http.StatusBadRequest)
	// A date at the end of time is refused, not turned into year 10000
	// (which sorts before every stored time and found nothing).
	wantStatus(t, e.get("/console/payments?to=9999-12-31", s), http.StatusBadRequest)
}

// fillQueue writes n queued records (with their orders and payments)
// straight into the database, one millisecond apart an hour ago: what an
// offline day leaves, in three statements.
// It returns the time of the first record.
func fillQueue(t *testing.T, db *migrations.DB, n int) time.Time {
	t.Helper()
	base := time.Now().Add(-time.Hour).Unix()
	seq := `WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq WHERE i < ?),
		s(i, at) AS (SELECT i, strftime('%Y-%m-%dT%H:%M:%S', ? + i / 1000, 'unixepoch') || printf('.%03d000000Z', i % 1000) FROM seq) `
	err := db.Update(context.Background(), func(tx *sql.Tx) error {
		for _, q := range []string{
			`INSERT INTO orders (id, status, channel, currency, lines, total_amount, paid_amount, terminal_id, created_at, updated_at)
				SELECT printf('ord_%05d', i), 'paid', 'walk_in', 'USD', '[]', 500, 500, 'lane-1', at, at FROM s`,
			`INSERT INTO payments (id, order_id, method, status, mode, amount, currency, capture, card_last4, terminal_id, created_at, updated_at)
				SELECT printf('pay_%05d', i), printf('ord_%05d', i), 'card', 'stored', 'offline', 500, 'USD', 1, '4242', 'lane-1', at, at FROM s`,
			`INSERT INTO saf_records (id, payment_id, idem_key, terminal_id, amount, currency, capture, fingerprint, card_last4, status,
				created_at, next_attempt_at, updated_at)
				SELECT printf('saf_%05d', i), printf('pay_%05d', i), printf('pay_%05d', i), 'lane-1', 500, 'USD', 1, printf('fp%05d', i), '4242',
				'queued', at, at, at FROM s`,
		} {
			if _, err := tx.Exec(seq+q, n-1, base); err != nil {
				return err
			}
		}
		_, err := tx.Exec(`UPDATE saf_outstanding SET count = count + ?, amount = amount + ?`, n, int64(n)*500)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return time.Unix(base, 0)
}

// A proposed resolution is accepted or rejected, with a reason, from the
// console or the manager API alike, once; the audit log records who.
func TestReconciliationProposalsAreDecidedOnceAndAudited(t *testing.T) {
	clearOfMidnight(t, 30*time.Second) // the payments must fall on the day reconciled
	e := newConsole(t, false)
	s := e.login(e.manager)
	ctx := context.Background()
	today := time.Now().UTC().Format(time.DateOnly)
	e.storedPayment(800, "4000056655665556") // not forwarded: a proposal to forward it
	e.storedPayment(900, "4012888888881881")
	if err := e.sim.CloseDay(today); err != nil {
		t.Fatal(err)
	}
	report, _ := e.sim.Settlement("", today)
	res, err := reconcile.Reconcile(ctx, e.db, reconcile.Input{Date: today,
		Sources: []reconcile.Source{reconcile.BytesSource("bank-a", "", "banksim", report)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := reconcile.Save(ctx, e.db, res); err != nil {
		t.Fatal(err)
	}
	rep, err := reconcile.Last(ctx, e.db, today)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for _, it := range rep.Items {
		if it.Resolution != nil && it.Resolution.Status == reconcile.Proposed && it.Resolution.ID > 0 {
			ids = append(ids, it.Resolution.ID)
		}
	}
	if len(ids) != 2 {
		t.Fatalf("want 2 proposals, got %v", rep.Items)
	}
	page := "/console/reconciliation?date=" + today
	if a := e.get(page, s); !strings.Contains(a.body, fmt.Sprintf(`id="accept-%d"`, ids[0])) {
		t.Fatalf("the page offers no decision on proposal %d", ids[0])
	}
	// The console: reject with a reason; a reason is required.
	wantStatus(t, e.post(s, page, fmt.Sprintf("/console/reconciliation/proposals/%d/reject", ids[0]), url.Values{"date": {today}}), http.StatusBadRequest)
	wantStatus(t, e.post(s, page, fmt.Sprintf("/console/reconciliation/proposals/%d/reject", ids[0]),
		url.Values{"date": {today}, "reason": {"customer paid cash instead"}}), http.StatusSeeOther)
	// The manager API: accept the other; deciding again is refused.
	bearer := []string{"Authorization", "Bearer " + e.manager, "Content-Type", "application/json"}
	a := e.do("POST", fmt.Sprintf("/v1/reconciliations/proposals/%d/accept", ids[1]), "", nil, bearer...)
	wantStatus(t, a, http.StatusOK)
	wantStatus(t, e.do("POST", fmt.Sprintf("/v1/reconciliations/proposals/%d/accept", ids[1]), "", nil, bearer...), http.StatusConflict)
	wantStatus(t, e.do("POST", fmt.Sprintf("/v1/reconciliations/proposals/%d/reject", ids[0]), "", nil, bearer...), http.StatusConflict)
	wantStatus(t, e.do("POST", "/v1/reconciliations/proposals/999999/accept", "", nil, bearer...), http.StatusNotFound)
	wantStatus(t, e.do("POST", fmt.Sprintf("/v1/reconciliations/proposals/%d/accept", ids[1]), "", nil,
		"Authorization", "Bearer "+e.terminal), http.StatusForbidden)

	rep, _ = reconcile.Last(ctx, e.db, today)
	got := map[int64]string{}
	for _, it := range rep.Items {
		if it.Resolution != nil {
			got[it.Resolution.ID] = it.Resolution.Status + " by " + it.Resolution.DecidedBy
		}
	}
	if got[ids[0]] != "rejected by boss" || got[ids[1]] != "accepted by boss" {
		t.Fatalf("decisions recorded: %v", got)
	}
	var actions []string
	for _, en := range e.audit() {
		if strings.HasPrefix(en.Action, "reconciliation.") {
			actions = append(actions, en.Action+":"+en.Reason)
		}
	}
	if strings.Join(actions, ",") != "reconciliation.accept:,reconciliation.reject:customer paid cash instead" {
		t.Fatalf("audit log: %v", actions)
	}
}

// Expired sessions are purged by the background pruning too, not only by
// the next sign-in; a live one stays.
func TestExpiredSessionsArePurged(t *testing.T) {
	e := newConsole(t, false)
	e.login(e.manager)
	e.advance(web.SessionIdle + time.Second)
	idle := e.login(e.manager) // this sign-in purges the first, idle session
	count := func() int {
		var n int
		if err := e.db.Read().QueryRow(`SELECT count(*) FROM console_sessions`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 1 {
		t.Fatalf("%d sessions after a sign-in past the first one's idle time, want 1", n)
	}
	e.advance(web.SessionIdle + time.Second)
	n, err := e.srv.PurgeSessions(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("purged %d, %v; want the idle session", n, err)
	}
	if n := count(); n != 0 {
		t.Fatalf("%d sessions left", n)
	}
	wantStatus(t, e.get("/console/estop", idle), http.StatusSeeOther)
	fresh := e.login(e.manager)
	if n, err := e.srv.PurgeSessions(context.Background()); err != nil || n != 0 {
		t.Fatalf("purged %d, %v; a live session must stay", n, err)
	}
	wantStatus(t, e.get("/console/estop", fresh), http.StatusOK)
}

// clearOfMidnight makes sure the next d of the test lies within one UTC
// day (a bank's business day): closer than d to midnight it waits until
// the new day has begun.
func clearOfMidnight(t *testing.T, d time.Duration) {
	t.Helper()
	now := time.Now().UTC()
	next := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
	if left := next.Sub(now); left < d {
		t.Logf("%s to midnight UTC: waiting for the new business day", left.Round(time.Millisecond))
		time.Sleep(left + 100*time.Millisecond)
	}
}
