package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"storepay/slo"
)

// runSLO is `storepay slo`: the service level of a window, from the
// database opened read-only (beside a serving store: no lock, no
// migration). Exit 0 every objective held, 1 one missed, 2 could not run.
func runSLO(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("slo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config `file` (JSON)")
	fromS := fs.String("from", "", "window start, RFC 3339 or YYYY-MM-DD (UTC)")
	toS := fs.String("to", "", "window end (exclusive), RFC 3339 or YYYY-MM-DD (UTC)")
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	from, err := parseWhen("--from", *fromS)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	to, err := parseWhen("--to", *toS)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	// A window that ends in the future is reported up to now: time not
	// lived yet is neither up nor down, and an incident still on ends now.
	if now := time.Now().UTC(); to.After(now) {
		to = now
	}
	cfg, err := loadConfigFlag(*path)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if _, err := os.Stat(cfg.Database); err != nil {
		return &exitError{code: 2, err: fmt.Errorf("slo: database: %w", err)}
	}
	db, err := slo.OpenReadOnly(cfg.Database)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	defer db.Close()
	opts := slo.Options{From: from, To: to}
	for _, g := range cfg.Gateways {
		opts.Banks = append(opts.Banks, g.Name)
	}
	rep, err := slo.Compute(ctx, db, opts)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("slo: write report: %w", err)}
	}
	if !rep.Held {
		return &exitError{code: 1, err: errors.New("")}
	}
	return nil
}

func parseWhen(name, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, fmt.Errorf("%s is required", name)
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%s %q: want RFC 3339 (2026-12-06T08:00:00Z) or a date (2026-12-06)", name, s)
}
