package saf

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
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
	outstandingCount, _ = meter.Int64ObservableGauge("storepay.saf.outstanding.count",
		metric.WithDescription("Payments waiting in store-and-forward (queued, forwarding, held, expired)."))
	outstandingAmount, _ = meter.Int64ObservableGauge("storepay.saf.outstanding.amount",
		metric.WithDescription("Minor units waiting in store-and-forward, to compare with total_limit."))
	oldestAge, _ = meter.Float64ObservableGauge("storepay.saf.oldest.age", metric.WithUnit("s"),
		metric.WithDescription("Age of the oldest waiting record, to compare with max_age."))
	estopState, _ = meter.Int64ObservableGauge("storepay.saf.estop",
		metric.WithDescription("1 for the emergency stop's current state (go, pause, stop), 0 for the others."))
)

// observe registers the queue's gauges, read at each scrape.
func (q *Queue) observe() (func() error, error) {
	reg, err := meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		st, err := q.Stats(ctx)
		if err != nil {
			return err
		}
		o.ObserveInt64(outstandingCount, st.OutstandingCount)
		o.ObserveInt64(outstandingAmount, st.Outstanding)
		o.ObserveFloat64(oldestAge, st.OldestAgeSeconds)
		cur := q.EStop(ctx).State
		for _, s := range []EStopState{Go, Pause, Stop} {
			v := int64(0)
			if s == cur {
				v = 1
			}
			o.ObserveInt64(estopState, v, metric.WithAttributes(attribute.String("state", string(s))))
		}
		return nil
	}, outstandingCount, outstandingAmount, oldestAge, estopState)
	if err != nil {
		return nil, err
	}
	return reg.Unregister, nil
}
