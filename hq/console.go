package hq

import (
	_ "embed"
	"html/template"
	"net/http"

	"storepay/orders"
)

//go:embed openapi.json
var openapiDoc []byte

const consoleCookie = "storepay_hq_token"

// The console is one page per question IT and risk ask: which stores are
// linked and stopped, what the chain has outstanding offline, which banks
// are down where, what banks declined after the store had accepted, and
// which reconciliations found discrepancies. It reads the same view as
// the API.
var consoleTmpl = template.Must(template.New("hq").Funcs(template.FuncMap{"money": orders.FormatMoney}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>storepay headquarters</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}.down{color:#b00}</style>
</head><body><h1>storepay headquarters</h1>
<nav><a href="/console">Stores</a></nav>
<h2>Exposure (chain-wide)</h2>
<p>{{.Exposure.SAFCount}} offline payments outstanding at {{.Exposure.StoresWithSAF}} of {{.Exposure.Stores}} stores,
{{money .Exposure.SAFAmount .Exposure.Currency}}{{with .Exposure.OldestAt}}, oldest {{.}}{{end}};
expiring soon: {{.Exposure.ExpiringSoon}} ({{money .Exposure.ExpiringSoonAmount .Exposure.Currency}});
declined after forward: {{money .Exposure.DeclinedAfterForwardAmount .Exposure.Currency}}.</p>
<h2>Stores</h2>
<table><tr><th>store</th><th>link</th><th>last seen</th><th>estop</th><th>offline count</th><th>offline amount</th><th>oldest</th>
<th>expiring soon</th><th>banks</th><th>declined after forward</th><th>reconciliation discrepancies</th></tr>
{{range .Stores}}<tr><td>{{.StoreID}}</td><td class="{{.Link}}">{{.Link}}</td><td>{{with .LastEventAt}}{{.}}{{else}}never{{end}}</td>
<td>{{.EStop}}{{if .EStopActor}} ({{.EStopActor}}){{end}}</td><td>{{.SAF.Count}}</td><td>{{money .SAF.Amount .SAF.Currency}}</td>
<td>{{with .SAF.OldestAt}}{{.}}{{end}}</td><td>{{.SAF.ExpiringSoon}} ({{money .SAF.ExpiringSoonAmount .SAF.Currency}})</td>
<td>{{range .Gateways}}{{.Name}}: {{.State}}<br>{{end}}</td>
<td>{{money .DeclinedAfterForward .SAF.Currency}}</td><td>{{.Discrepancies}}</td></tr>{{end}}
</table></body></html>`))

var signinTmpl = template.Must(template.New("signin").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>storepay headquarters: sign in</title></head><body>
<h1>storepay headquarters</h1><form method="post" action="/console/signin">
<label>Token from <code>storepay hq enroll</code> <input type="password" name="token" autocomplete="off"></label>
<button>Sign in</button></form></body></html>`))

func (h *Hub) consoleRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /console/signin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		signinTmpl.Execute(w, nil)
	})
	mux.HandleFunc("POST /console/signin", func(w http.ResponseWriter, r *http.Request) {
		tok := r.PostFormValue("token")
		if name, err := tokenName(r.Context(), h.DB, tok); err != nil || name == "" {
			http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
			return
		}
		http.SetCookie(w, &http.Cookie{Name: consoleCookie, Value: tok, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		http.Redirect(w, r, "/console", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /console", func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie(consoleCookie)
		if err != nil {
			http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
			return
		}
		if name, err := tokenName(r.Context(), h.DB, c.Value); err != nil || name == "" {
			http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
			return
		}
		stores, err := h.Stores(r.Context())
		if err != nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		exp, err := h.ChainExposure(r.Context())
		if err != nil {
			http.Error(w, "internal error", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		consoleTmpl.Execute(w, map[string]any{"Stores": stores, "Exposure": exp})
	})
}

// OpenAPI is headquarters' OpenAPI 3.1 document.
func OpenAPI() []byte { return openapiDoc }
