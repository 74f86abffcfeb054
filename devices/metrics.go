package devices

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

var (
	meter           = otel.Meter("storepay/devices")
	devicesGauge, _ = meter.Int64ObservableGauge("storepay.devices",
		metric.WithDescription("Enrolled devices by health: ok, degraded (a peripheral reports an error), offline (no heartbeat for two intervals), unknown (never sent one), revoked."))
	peripheralsGauge, _ = meter.Int64ObservableGauge("storepay.devices.peripherals",
		metric.WithDescription("Peripherals of devices that are not revoked, by kind and last reported status (ok, error)."))
)

// Observe registers the devices' gauges, read from the database at each
// scrape; the returned func unregisters them.
func (r *Registry) Observe() (unregister func() error, err error) {
	reg, err := meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		all, err := r.Statuses(ctx)
		if err != nil {
			return err
		}
		byHealth := map[Health]int64{}
		type pk struct{ kind, status string }
		byPeripheral := map[pk]int64{}
		for _, k := range PeripheralKinds {
			byPeripheral[pk{k, "ok"}], byPeripheral[pk{k, "error"}] = 0, 0
		}
		for _, s := range all {
			byHealth[s.Health]++
			if s.Health == HealthRevoked {
				continue
			}
			for _, p := range s.Peripherals {
				byPeripheral[pk{p.Kind, p.Status}]++
			}
		}
		for _, h := range Healths {
			o.ObserveInt64(devicesGauge, byHealth[h], metric.WithAttributes(attribute.String("health", string(h))))
		}
		for k, n := range byPeripheral {
			o.ObserveInt64(peripheralsGauge, n, metric.WithAttributes(attribute.String("kind", k.kind), attribute.String("status", k.status)))
		}
		return nil
	}, devicesGauge, peripheralsGauge)
	if err != nil {
		return nil, err
	}
	return reg.Unregister, nil
}
