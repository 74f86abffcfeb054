package saf

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

var meter = otel.Meter("storepay/saf")

var (
	admitted, _ = meter.Int64Counter("storepay.saf.admitted",
		metric.WithDescription("Card payments accepted offline into the store-and-forward queue."))
	forwards, _ = meter.Int64Counter("storepay.saf.forwards",
		metric.WithDescription("Forwarding outcomes, by gateway and resulting record status."))
	expired, _ = meter.Int64Counter("storepay.saf.expired",
		metric.WithDescription("Records flagged expired (waited past max_age)."))
	guardTrips, _ = meter.Int64Counter("storepay.saf.runaway_guard.trips",
		metric.WithDescription("ALERT: the runaway guard paused forwarding."))
)
