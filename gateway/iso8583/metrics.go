package iso8583

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

var (
	meter = otel.Meter("storepay/gateway/iso8583")

	lateAnswers, _ = meter.Int64Counter("storepay.iso8583.late_answers",
		metric.WithDescription("Answers that came after their caller gave up (timeout, cancel): logged and counted, nothing else."))
	badInputs, _ = meter.Int64Counter("storepay.iso8583.bad_input",
		metric.WithDescription("Input from a switch that breaks the profile, by reason; the connection is dropped and rebuilt."))
	connections, _ = meter.Int64Counter("storepay.iso8583.connections",
		metric.WithDescription("Connection attempts and losses, by outcome (signed_on, failed, refused, lost)."))
	exchanges, _ = meter.Int64Counter("storepay.iso8583.exchanges",
		metric.WithDescription("Requests sent to a switch, by MTI and outcome (answered, not_sent, unknown)."))
)
