package web

import "github.com/go-chi/chi/v5"

// console registers the manager web console's routes under /console.
func (s *Server) console(r chi.Router) {}
