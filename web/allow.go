package web

import (
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"
)

// methodNotAllowed answers 405 with the Allow header RFC 9110 requires:
// chi lists the allowed methods only in its own default handler, so they
// are found again here by asking the router which methods match the path.
func methodNotAllowed(mux chi.Routes) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var allowed []string
		for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			if mux.Match(chi.NewRouteContext(), m, r.URL.Path) {
				allowed = append(allowed, m)
			}
		}
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeProblem(w, r, problem(http.StatusMethodNotAllowed, "method_not_allowed",
			r.Method+" is not allowed here; allowed: "+strings.Join(allowed, ", ")))
	}
}
