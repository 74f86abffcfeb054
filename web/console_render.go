package web

import (
	"storepay/gateway"

	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"storepay/orders"
	"storepay/saf"
)

// consoleFS holds the console's templates and its two static files. The
// htmx licence and the folder's README are not served.
//
//go:embed console/templates/*.html console/static/htmx.min.js console/static/console.css
var consoleFS embed.FS

// consoleAssets are the static files, by name, with a short hash of their
// content: pages link to /console/static/NAME?v=HASH, so an upgraded file
// gets a new URL and every URL can be cached for a year.
var consoleAssets = func() map[string]string {
	out := map[string]string{}
	for _, name := range []string{"htmx.min.js", "console.css"} {
		b, err := consoleFS.ReadFile("console/static/" + name)
		if err != nil {
			panic(err)
		}
		sum := sha256.Sum256(b)
		out[name] = hex.EncodeToString(sum[:6])
	}
	return out
}()

// consoleStatic serves the embedded assets with a long cache lifetime.
func consoleStatic(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.URL.Path, "/console/static/")
	if _, ok := consoleAssets[name]; !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	http.ServeFileFS(w, r, consoleFS, "console/static/"+name)
}

// consoleTemplates are parsed once, at start: each page is the layout
// (base.html) plus its own content.
var consoleTemplates = func() map[string]*template.Template {
	base := template.Must(template.New("base.html").Funcs(consoleFuncs).ParseFS(consoleFS, "console/templates/base.html"))
	pages, err := fs.Glob(consoleFS, "console/templates/*.html")
	if err != nil {
		panic(err)
	}
	out := map[string]*template.Template{}
	for _, p := range pages {
		name := strings.TrimSuffix(strings.TrimPrefix(p, "console/templates/"), ".html")
		if name == "base" {
			continue
		}
		out[name] = template.Must(template.Must(base.Clone()).ParseFS(consoleFS, p))
	}
	return out
}()

// view is what every console page renders: the layout's fields and the
// page's own Data.
type view struct {
	Title   string
	Nav     string // the menu entry to mark as current
	Manager string // the signed-in manager; empty on the login page
	CSRF    string
	EStop   saf.EStop
	Flash   string
	Error   string
	Now     time.Time
	Data    any
}

// render writes a console page. It renders into a buffer first, so a
// template error becomes a clean 500 rather than half a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, page string, v view) {
	t := consoleTemplates[page]
	if t == nil {
		s.consoleInternal(w, r, fmt.Errorf("console: no template %q", page))
		return
	}
	ri := info(r)
	if ri.Authed {
		v.Manager = ri.Device.Name
		v.CSRF = csrfToken(r)
		if s.saf != nil {
			v.EStop = s.saf.EStop(r.Context())
		}
	}
	if v.Now.IsZero() {
		v.Now = s.now()
	}
	var buf bytes.Buffer
	if err := t.ExecuteTemplate(&buf, "base.html", v); err != nil {
		s.consoleInternal(w, r, fmt.Errorf("console: render %s: %w", page, err))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// consoleInternal answers an unexpected error: logged with the request id,
// shown without its details.
func (s *Server) consoleInternal(w http.ResponseWriter, r *http.Request, err error) {
	s.log.Error("console request failed", "request_id", info(r).ID, "method", r.Method, "path", r.URL.Path, "err", err)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, `<!doctype html><html lang="en"><meta charset="utf-8"><title>Error · storepay</title>`+
		`<p>Something went wrong. The server log has the details under request <code>%s</code>.</p><p><a href="/console">Back to the console</a></p>`,
		template.HTMLEscapeString(info(r).ID))
}

// consoleFail answers an error from a console page or action. A domain
// error (a record that cannot be replayed, a payment that does not exist)
// is shown with its message and a way back; anything else is internal.
func (s *Server) consoleFail(w http.ResponseWriter, r *http.Request, err error, back, backLabel string) {
	status, msg := 0, ""
	if de := orders.AsError(err); de != nil {
		status, msg = kindStatus[de.Kind], de.Message
	}
	var p *Problem
	if errors.As(err, &p) {
		status, msg = p.Status, p.Detail
	}
	if status == 0 {
		s.consoleInternal(w, r, err)
		return
	}
	s.render(w, r, status, "error", view{Title: http.StatusText(status), Error: msg,
		Data: map[string]string{"Back": back, "BackLabel": backLabel}})
}

// consoleHeaders sets what every console answer carries: no caching of
// pages that show payments, no framing, scripts and styles only from
// storepay itself.
func consoleHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
			"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		if !strings.HasPrefix(r.URL.Path, "/console/static/") {
			h.Set("Cache-Control", "no-store")
		}
		next.ServeHTTP(w, r)
	})
}

// money formats minor units in their currency (orders.FormatMoney).
func money(amount int64, currency string) string { return orders.FormatMoney(amount, currency) }

// when shows a time in the store's own time zone (the machine's), to the
// second. The zero time and the Unix epoch (the emergency stop's seed
// row) show as a dash.
func when(t time.Time) string {
	if t.IsZero() || t.Unix() == 0 {
		return "—"
	}
	return t.Local().Format("2006-01-02 15:04:05")
}

// whenShort is when to the minute, for table cells (the full time is in
// the cell's title).
func whenShort(t time.Time) string {
	if t.IsZero() || t.Unix() == 0 {
		return "—"
	}
	return t.Local().Format("2006-01-02 15:04")
}

// short abbreviates an id for a table cell, keeping its kind and its
// end: "pay_01a1ffef41627977a23c8ca9bbc7ba10" is "pay_…bbc7ba10". Links
// and titles carry the whole id.
func short(id string) string {
	prefix, rest, ok := strings.Cut(id, "_")
	if !ok || len(rest) <= 12 {
		return id
	}
	return prefix + "_…" + rest[len(rest)-8:]
}

// trunc cuts s to n characters, marking the cut.
func trunc(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// span shows a duration the way a manager reads it: "3d 4h", "2h 05m",
// "45s".
func span(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd %dh", int(d.Hours())/24, int(d.Hours())%24)
	case d >= time.Hour:
		return fmt.Sprintf("%dh %02dm", int(d.Hours()), int(d.Minutes())%60)
	case d >= time.Minute:
		return fmt.Sprintf("%dm %02ds", int(d.Minutes()), int(d.Seconds())%60)
	}
	return fmt.Sprintf("%ds", int(d.Seconds()))
}

// dur shows a whole duration in words: "8 hours", "30 minutes".
func dur(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%d %s", d/time.Hour, map[bool]string{true: "hour", false: "hours"}[d == time.Hour])
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%d %s", d/time.Minute, map[bool]string{true: "minute", false: "minutes"}[d == time.Minute])
	}
	return span(d)
}

var consoleFuncs = template.FuncMap{
	"dur":       dur,
	"whenShort": whenShort,
	"short":     short,
	"trunc":     trunc,
	"money":     money,
	"when":      when,
	"condition": conditionWords,
	"sums":      saf.FormatSums,
	"span":      span,
	"seconds": func(f float64) string {
		return span(time.Duration(f * float64(time.Second)))
	},
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return span(now.Sub(t)) + " ago"
	},
	"pct": func(f float64) string {
		if f < 0 {
			return "no attempts yet"
		}
		return strconv.FormatFloat(f*100, 'f', 0, 64) + "%"
	},
	// percent shows an SLO ratio to four decimals: 99.999% needs them.
	"percent": func(f float64) string { return strconv.FormatFloat(f*100, 'f', 4, 64) + "%" },
	"asset": func(name string) string {
		return "/console/static/" + name + "?v=" + consoleAssets[name]
	},
	"query": func(base string, kv ...any) string {
		v := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			if val := fmt.Sprint(kv[i+1]); val != "" && val != "0" {
				v.Set(fmt.Sprint(kv[i]), val)
			}
		}
		if len(v) == 0 {
			return base
		}
		return base + "?" + v.Encode()
	},
	"add":        func(a, b int) int { return a + b },
	"mul":        func(a, b int64) int64 { return a * b },
	"hasPrefix":  strings.HasPrefix,
	"trimPrefix": strings.TrimPrefix,
	"plural": func(n any, one, many string) string {
		if fmt.Sprint(n) == "1" {
			return one
		}
		return many
	},
}

// conditionWords is a bank's condition as the console says it.
func conditionWords(c string) string {
	switch c {
	case gateway.CondTakingPayments:
		return "Taking payments"
	case gateway.CondBeingTested:
		return "Being tested (the next payment is a trial)"
	case gateway.CondOut:
		return "Out"
	}
	return c
}
