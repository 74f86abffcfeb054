package slo

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Windows are the trailing windows the gauges report, labelled window:
// the pairs that multi-window burn-rate alerts combine (5m with 1h, 30m
// with 6h) and a day. docs/slo-alerts.yml uses them.
var Windows = []struct {
	Label string
	D     time.Duration
}{{"5m", 5 * time.Minute}, {"30m", 30 * time.Minute}, {"1h", time.Hour}, {"6h", 6 * time.Hour}, {"1d", 24 * time.Hour}}

// Watch registers the storepay_slo_* gauges, computed from db (serve's
// read pool) over each trailing window when Prometheus scrapes. banks are
// the configured banks. The returned function unregisters them.
func Watch(db *sql.DB, banks []string, now func() time.Time) (func(), error) {
	if now == nil {
		now = time.Now
	}
	m := otel.Meter("storepay/slo")
	g := func(name, desc string) metric.Float64ObservableGauge {
		o, _ := m.Float64ObservableGauge("storepay.slo."+name, metric.WithDescription(desc))
		return o
	}
	payAvail := g("payment_availability", "Card payments decided within their budget over all card payments started in the trailing window (1 when there were none).")
	storeAvail := g("store_availability", "Share of the trailing window with storepay running and no customer kept waiting over a minute.")
	burn := g("burn_rate", "Error budget burn rate against the 99.999% payment objective over the trailing window: 1 spends it exactly.")
	left := g("error_budget_left", "Share of the trailing window's error budget not spent (negative: overspent).")
	offline := g("offline_only_seconds", "Seconds of the trailing window in which no bank admitted payments.")
	card := g("card_payments", "Card payments started in the trailing window.")
	bad := g("bad_payments", "Card payments started in the trailing window and not decided within their budget.")
	objective := g("objective", "The payment availability objective.")
	reg, err := m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		t := now()
		o.ObserveFloat64(objective, DefaultObjective)
		for _, w := range Windows {
			rep, err := Compute(ctx, db, Options{From: t.Add(-w.D), To: t, Banks: banks})
			if err != nil {
				return fmt.Errorf("slo gauges %s: %w", w.Label, err)
			}
			at := metric.WithAttributes(attribute.String("window", w.Label))
			o.ObserveFloat64(payAvail, rep.Payments.Availability, at)
			o.ObserveFloat64(storeAvail, rep.Store.Availability, at)
			o.ObserveFloat64(burn, rep.Budget.BurnRate, at)
			o.ObserveFloat64(left, rep.Budget.Left, at)
			o.ObserveFloat64(offline, rep.OfflineOnlySeconds, at)
			o.ObserveFloat64(card, float64(rep.Payments.Card), at)
			o.ObserveFloat64(bad, float64(rep.Budget.Spent), at)
		}
		return nil
	}, payAvail, storeAvail, burn, left, offline, card, bad, objective)
	if err != nil {
		return nil, fmt.Errorf("slo gauges: %w", err)
	}
	return func() { reg.Unregister() }, nil
}
