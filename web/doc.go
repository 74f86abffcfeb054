// Package web is storepay's HTTP face: the terminal and manager JSON API
// of the contract, the manager console, health, readiness and metrics.
//
// All routes are registered in [Server.Handler], top to bottom. Every
// request gets a request id and a structured log line; /v1 requests are
// authenticated by bearer token ([devices.Registry]); terminal POSTs pass
// through the idempotency layer (idempotency.go), which claims the
// Idempotency-Key durably, runs the handler, and stores its answer on disk
// before the terminal hears it. Domain errors become RFC 9457 problems in
// one place (problem.go).
package web
