package gateway

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

var (
	meter  = otel.Meter("storepay/gateway")
	tracer = otel.Tracer("storepay/gateway")

	attempts, _ = meter.Int64Counter("storepay.gateway.attempts",
		metric.WithDescription("HTTP attempts at a bank, by gateway, operation and outcome."))
	latency, _ = meter.Float64Histogram("storepay.gateway.latency", metric.WithUnit("s"),
		metric.WithDescription("Latency of one attempt at a bank."),
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
	failovers, _ = meter.Int64Counter("storepay.gateway.failovers",
		metric.WithDescription("Authorizations decided by a bank after an earlier bank provably did nothing."))
	reversedFailovers, _ = meter.Int64Counter("storepay.gateway.reversed_failovers",
		metric.WithDescription("Authorizations whose unknown outcome at a bank was reversed (acknowledged) before the next bank was tried."))
	breakerTransitions, _ = meter.Int64Counter("storepay.gateway.breaker.transitions",
		metric.WithDescription("Circuit breaker state changes, by gateway and new state."))
	breakerState, _ = meter.Int64ObservableGauge("storepay.gateway.breaker.state",
		metric.WithDescription("1 for each bank's current state (closed, open, half_open, disabled), 0 for the others."))
	unauthorizedAlerts, _ = meter.Int64Counter("storepay.gateway.unauthorized",
		metric.WithDescription("ALERT: a bank answered 401 and was disabled."))
)
