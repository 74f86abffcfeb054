package orders

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

var meter = otel.Meter("storepay/orders")

var (
	paymentsDecided, _ = meter.Int64Counter("storepay.payments.decided",
		metric.WithDescription("Card payment decisions, by status and mode."))
	resolutions, _ = meter.Int64Counter("storepay.payments.resolutions",
		metric.WithDescription("Attempts to resolve a payment whose bank call was written ahead, by operation."))
)

func statusAttrs(p Payment) metric.AddOption {
	return metric.WithAttributes(attribute.String("status", string(p.Status)), attribute.String("mode", string(p.Mode)),
		attribute.String("gateway", p.Gateway))
}

func opAttr(op string) metric.AddOption {
	return metric.WithAttributes(attribute.String("op", op))
}
