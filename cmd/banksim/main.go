// Command banksim runs the simulated acquirer of package
// storepay/gateway/banksim as a process: protocol listeners on --listen,
// the admin API on --admin, faults switched on from the start by flags or
// later through the admin API.
//
// --protocol chooses what the listeners speak: acquirer-json (HTTP, the
// default) or iso8583 (the ISO 8583 profile over TCP: a switch). The
// ledger, the admin API and the faults are the same; for iso8583,
// --not-processed answers 91, --error-rate 96, --unauthorized 03, and
// --rate-limit does not apply.
//
// On start it prints one line per URL on stdout, for a parent process that
// passed port 0:
//
//	banksim listening on http://127.0.0.1:9101
//	banksim admin on http://127.0.0.1:9100
//
// (tcp://127.0.0.1:9301 for an iso8583 listener.)
//
// Logs are JSON on stderr. SIGINT or SIGTERM stops it cleanly.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"storepay/gateway/banksim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "banksim:", err)
		os.Exit(1)
	}
}

// options are banksim's flags.
type options struct {
	listen, admin, apiKey, merchantID, logLevel string
	protocol                                    string
	lateCutoff                                  time.Duration
	dailyFee                                    int64

	latency, jitter                   time.Duration
	errorRate, notProcessed, dropRate float64
	rateLimit                         int
	blackhole, refuse, unauthorized   bool
	latencyAfterWork                  bool
}

func parse(args []string, getenv func(string) string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("banksim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:9101", "comma-separated `addresses` of the protocol listeners (the bank's URLs); for iso8583 the default is 127.0.0.1:9301")
	fs.StringVar(&o.protocol, "protocol", protocolJSON, "`protocol` of the listeners: "+protocolJSON+" or "+protocolISO)
	fs.StringVar(&o.admin, "admin", "127.0.0.1:9100", "`address` of the admin API (no authentication: keep it on loopback)")
	fs.StringVar(&o.apiKey, "api-key", getenv("BANKSIM_API_KEY"), "API key clients must send (default $BANKSIM_API_KEY, else "+banksim.DefaultAPIKey+")")
	fs.StringVar(&o.merchantID, "merchant-id", "", "accept only this merchant_id (default: any)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log `level`: debug, info, warn, error")
	fs.DurationVar(&o.lateCutoff, "late-cutoff", 0, "UTC time of day after which bookings go to the next business date, e.g. 22h (0: off)")
	fs.Int64Var(&o.dailyFee, "daily-fee", 0, "add a Fee row of this many minor units to each day's report (0: off)")
	fs.DurationVar(&o.latency, "latency", 0, "fault: delay every answer by this much")
	fs.DurationVar(&o.jitter, "latency-jitter", 0, "fault: add up to this much random delay")
	fs.BoolVar(&o.latencyAfterWork, "latency-after-work", false, "fault: on a new POST, do the work first and delay only the answer")
	fs.Float64Var(&o.errorRate, "error-rate", 0, "fault: `probability` of answering 500 without doing the work")
	fs.Float64Var(&o.notProcessed, "not-processed", 0, "fault: `probability` of answering 503 not_processed")
	fs.Float64Var(&o.dropRate, "drop-after-apply", 0, "fault: `probability` of doing the work, then resetting the connection unanswered")
	fs.IntVar(&o.rateLimit, "rate-limit", 0, "fault: answer 429 over this many requests per second (0: off)")
	fs.BoolVar(&o.blackhole, "blackhole", false, "fault: accept requests and never answer")
	fs.BoolVar(&o.refuse, "refuse", false, "fault: refuse connections on the protocol listeners")
	fs.BoolVar(&o.unauthorized, "unauthorized", false, "fault: answer 401 to everything")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch o.protocol {
	case protocolJSON:
	case protocolISO:
		listenSet := false
		fs.Visit(func(f *flag.Flag) { listenSet = listenSet || f.Name == "listen" })
		if !listenSet {
			o.listen = "127.0.0.1:9301"
		}
		if o.rateLimit > 0 {
			return o, errors.New("--rate-limit does not apply to the iso8583 protocol")
		}
	default:
		return o, fmt.Errorf("--protocol %q is neither %s nor %s", o.protocol, protocolJSON, protocolISO)
	}
	return o, nil
}

// The protocols a listener can speak.
const (
	protocolJSON = "acquirer-json"
	protocolISO  = "iso8583"
)

// faults turns the fault flags into Faults for every listener.
func (o options) faults() banksim.Faults {
	var f banksim.Faults
	if o.latency > 0 || o.jitter > 0 {
		f.Latency = &banksim.Latency{Fixed: o.latency, Jitter: o.jitter, AfterWork: o.latencyAfterWork}
	}
	if o.errorRate > 0 {
		f.Error = &banksim.Fault{Probability: o.errorRate}
	}
	if o.notProcessed > 0 {
		f.NotProcessed = &banksim.Fault{Probability: o.notProcessed}
	}
	if o.dropRate > 0 {
		f.DropAfterApply = &banksim.Fault{Probability: o.dropRate}
	}
	if o.rateLimit > 0 {
		f.RateLimit = &banksim.RateLimit{PerSecond: o.rateLimit}
	}
	if o.blackhole {
		f.Blackhole = &banksim.Fault{}
	}
	if o.unauthorized {
		f.Unauthorized = &banksim.Fault{}
	}
	f.Refuse = o.refuse
	return f
}

// run starts the simulator and serves until ctx is done.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	o, err := parse(args, getenv, stderr)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return fmt.Errorf("log level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	if o.apiKey == "" {
		log.Warn("no --api-key or BANKSIM_API_KEY: accepting the default test key")
	}

	sim := banksim.New(banksim.Config{
		APIKey:     o.apiKey,
		MerchantID: o.merchantID,
		Logger:     log,
		LateCutoff: o.lateCutoff,
		DailyFee:   o.dailyFee,
	})
	defer sim.Close()

	// Faults go in before any listener opens: a client that reads the
	// printed URL must never catch the bank without them.
	if f := o.faults(); f != (banksim.Faults{}) {
		if err := sim.SetFaults("", f); err != nil {
			return err
		}
	}
	for addr := range strings.SplitSeq(o.listen, ",") {
		if addr = strings.TrimSpace(addr); addr == "" {
			continue
		}
		listen := sim.Listen
		if o.protocol == protocolISO {
			listen = sim.ListenISO8583
		}
		url, err := listen(addr)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "banksim listening on %s\n", url)
	}
	if len(sim.URLs()) == 0 {
		return errors.New("no --listen address")
	}
	adminURL, err := sim.ListenAdmin(o.admin)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "banksim admin on %s\n", adminURL)

	<-ctx.Done()
	log.Info("banksim stopping")
	if err := sim.Close(); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	log.Info("banksim stopped")
	return nil
}
