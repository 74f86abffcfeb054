package main

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"storepay/gateway"
	"storepay/gateway/iso8583"
	"storepay/migrations"
)

// isoLinks are the ISO 8583 gateways' connections: one client per URL,
// opened when storepay starts serving and closed when it stops, and the
// durable side of each gateway (STANs, traces, records).
type isoLinks struct {
	clients  []*iso8583.Client
	durables []*iso8583.Durable
}

// isoEndpoints makes an ISO 8583 gateway's endpoints: one client per URL
// sharing the terminal's durable STAN counter, traces and records.
func (l *isoLinks) isoEndpoints(g GatewayConfig, db *migrations.DB, vault *gateway.Vault, log *slog.Logger) ([]gateway.Endpoint, error) {
	d := &iso8583.Durable{DB: db, Gateway: g.Name, Terminal: g.TerminalID}
	l.durables = append(l.durables, d)
	var eps []gateway.Endpoint
	for _, u := range g.URLs {
		c, err := iso8583.NewClient(iso8583.Config{URL: u, Gateway: g.Name, STANs: d, Logger: log,
			Terminal: iso8583.Terminal{TerminalID: g.TerminalID, MerchantID: g.MerchantID, Location: time.UTC},
			OnLateAnswer: func(a iso8583.LateAnswer) {
				// Counted and logged by the client; it changes nothing: the
				// caller that gave up resolved it (a repeat, or a reversal
				// whose late approval reconciliation will show).
				log.Warn("iso8583: late answer after its caller gave up; nothing changed, reconciliation will show any charge",
					"gateway", a.Gateway, "url", a.URL)
			}})
		if err != nil {
			return nil, err
		}
		ep, err := iso8583.NewEndpoint(iso8583.EndpointConfig{Client: c, Traces: d, Vault: vault, Store: d})
		if err != nil {
			return nil, err
		}
		l.clients = append(l.clients, c)
		eps = append(eps, ep)
	}
	return eps, nil
}

// open connects every client (each signs on in the background and keeps
// reconnecting).
func (l *isoLinks) open() error {
	var errs []error
	for _, c := range l.clients {
		errs = append(errs, c.Open())
	}
	return errors.Join(errs...)
}

// close disconnects them, waiting at most until ctx ends.
func (l *isoLinks) close(ctx context.Context) error {
	var errs []error
	for _, c := range l.clients {
		errs = append(errs, c.Close(ctx))
	}
	return errors.Join(errs...)
}

// purge deletes the records and traces nothing will name again.
func (l *isoLinks) purge(ctx context.Context) (int64, error) {
	var n int64
	var errs []error
	for _, d := range l.durables {
		m, err := d.Purge(ctx)
		n += m
		errs = append(errs, err)
	}
	return n, errors.Join(errs...)
}
