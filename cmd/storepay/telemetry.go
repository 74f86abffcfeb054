package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// Telemetry is process-wide: OpenTelemetry's global providers are set
// once, and the packages' instruments bind to the first provider set.
var (
	telemetryOnce    sync.Once
	telemetryHandler http.Handler
	telemetryErr     error
)

// setupTelemetry installs the OpenTelemetry meter provider, exported in
// Prometheus text format at /metrics, and, only when
// OTEL_EXPORTER_OTLP_ENDPOINT is set, an OTLP trace exporter: stores are
// often offline and must not queue spans for a collector that isn't there.
func setupTelemetry(getenv func(string) string) (http.Handler, error) {
	telemetryOnce.Do(func() {
		res := resource.NewSchemaless(semconv.ServiceName("storepay"))
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		exp, err := otelprom.New(otelprom.WithRegisterer(reg))
		if err != nil {
			telemetryErr = fmt.Errorf("metrics exporter: %w", err)
			return
		}
		otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp), sdkmetric.WithResource(res)))
		telemetryHandler = promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
		otel.SetTextMapPropagator(propagation.TraceContext{})
		if getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" {
			texp, err := otlptracehttp.New(context.Background())
			if err != nil {
				telemetryErr = fmt.Errorf("trace exporter: %w", err)
				return
			}
			otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithBatcher(texp), sdktrace.WithResource(res)))
		}
	})
	return telemetryHandler, telemetryErr
}
