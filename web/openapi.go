package web

import (
	_ "embed"
	"net/http"
)

// openAPIDoc describes the terminal and manager API (OpenAPI 3.1). A test
// keeps it and the routes of [Server.Handler] in step.
//
//go:embed openapi.json
var openAPIDoc []byte

// OpenAPI returns the embedded OpenAPI document.
func OpenAPI() []byte { return openAPIDoc }

func (s *Server) openapi(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPIDoc)
}
