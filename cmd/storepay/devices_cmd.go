package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"storepay/devices"
	"storepay/gateway"
	"storepay/migrations"
)

// maxReason bounds a reason given on the command line, as the manager
// API bounds its reasons.
const maxReason = 500

// runDevices dispatches storepay devices enroll|list|revoke. None takes
// the database's lock: each is one short read or write beside a serving
// store (see lockDatabase).
func runDevices(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return &exitError{code: 1, err: errors.New("devices: name a subcommand: enroll, list or revoke")}
	}
	switch args[0] {
	case "enroll":
		return runEnroll(ctx, args[1:], getenv, stdout, stderr)
	case "list":
		return runDevicesList(ctx, args[1:], stdout, stderr)
	case "revoke":
		return runDevicesRevoke(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, usage)
	return &exitError{code: 1, err: fmt.Errorf("devices: unknown subcommand %q (enroll, list or revoke)", args[0])}
}

func runDevicesList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := configOnly("devices list", args, stderr)
	if err != nil {
		return err
	}
	db, err := openExisting(ctx, cfg.Database)
	if err != nil {
		return fmt.Errorf("devices list: %w", err)
	}
	defer db.Close()
	all, err := (&devices.Registry{DB: db}).Statuses(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tROLE\tHEALTH\tLAST SEEN\tADDRESS\tPERIPHERALS")
	for _, d := range all {
		seen := "never"
		if d.LastSeenAt != nil {
			seen = d.LastSeenAt.UTC().Format(time.RFC3339)
		}
		addr := d.LastSeenAddress
		if addr == "" {
			addr = "-"
		}
		per := ""
		for _, p := range d.Peripherals {
			if per != "" {
				per += " "
			}
			per += p.Kind + "=" + p.Status
		}
		if per == "" {
			per = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", d.Name, d.Role, d.Health, seen, addr, per)
	}
	return tw.Flush()
}

func runDevicesRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("devices revoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config `file` (JSON)")
	name := fs.String("name", "", "the device's `name`")
	reason := fs.String("reason", "", "why, for the audit log")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *name == "" {
		return &exitError{code: 2, err: errors.New("devices revoke: --name is required")}
	}
	// The reason goes to the audit log, as a manager's reason on the API
	// does: the same limit, and a card number in it masked.
	if n := utf8.RuneCountInString(*reason); n > maxReason {
		return fmt.Errorf("devices revoke: --reason is %d characters, at most %d; nothing was changed", n, maxReason)
	}
	*reason = gateway.MaskPANs(*reason)
	cfg, err := loadConfigFlag(*path)
	if err != nil {
		return err
	}
	db, err := openExisting(ctx, cfg.Database)
	if err != nil {
		return fmt.Errorf("devices revoke: %w", err)
	}
	defer db.Close()
	d, err := (&devices.Registry{DB: db}).Revoke(ctx, *name, "cli", *reason)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "revoked %s (%s) at %s: its token and console sessions are refused\n", d.Name, d.Role, d.RevokedAt.UTC().Format(time.RFC3339))
	return nil
}

// openExisting opens the database for a command that reads or changes
// what is in it: a mistyped path is an error, not a new empty database.
func openExisting(ctx context.Context, path string) (*migrations.DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	return migrations.Open(ctx, path)
}

// cliOrigin is who runs a devices command and where, for the audit log:
// the actor "cli" (as devices revoke), the operating system's user (and
// the one behind sudo, who is the person) and the host. What cannot be
// found out is said so rather than left out.
func cliOrigin(getenv func(string) string) devices.Origin {
	who := "an unknown user"
	if u, err := user.Current(); err == nil && u.Username != "" {
		who = "user " + u.Username
	} else if err == nil {
		who = "uid " + u.Uid
	}
	if getenv == nil {
		getenv = os.Getenv
	}
	if su := getenv("SUDO_USER"); su != "" && nameOK(su) {
		who += " (sudo by " + su + ")"
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "an unknown host"
	}
	return devices.Origin{Actor: "cli", From: who + " on host " + host + ", command line"}
}

// nameOK reports whether an environment's user name is printable and
// short enough to write into the audit log as it is.
func nameOK(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, c := range s {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}
