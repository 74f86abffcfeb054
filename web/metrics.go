package web

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

var meter = otel.Meter("storepay/web")

var idemReplays, _ = meter.Int64Counter("storepay.idempotency.replays",
	metric.WithDescription("Answers replayed for a repeated Idempotency-Key."))
