package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"storepay/gameday"
)

// runGameday is `storepay gameday --plan F`: a store's day against real
// banksim processes and a real storepay serve (this binary), on loopback.
// Exit 0 passed, 1 an objective or the ledger check failed, 2 could not
// run.
func runGameday(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gameday", flag.ContinueOnError)
	fs.SetOutput(stderr)
	planPath := fs.String("plan", "", "plan `file` (JSON, see testdata/gameday)")
	banksim := fs.String("banksim", "", "banksim `binary` (default: banksim beside this binary, else on PATH)")
	dir := fs.String("dir", "", "`directory` for the run's database, config and logs (default: a new temporary one, kept)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *planPath == "" {
		return &exitError{code: 2, err: errors.New("gameday: --plan is required")}
	}
	plan, err := gameday.Load(*planPath)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	self, err := os.Executable()
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("gameday: find this binary: %w", err)}
	}
	if *banksim == "" {
		*banksim = filepath.Join(filepath.Dir(self), "banksim")
		if _, err := os.Stat(*banksim); err != nil {
			if *banksim, err = exec.LookPath("banksim"); err != nil {
				return &exitError{code: 2, err: errors.New("gameday: no banksim beside this binary nor on PATH: go build -o DIR ./cmd/banksim, or pass --banksim")}
			}
		}
	}
	if *dir == "" {
		if *dir, err = os.MkdirTemp("", "storepay-gameday-"); err != nil {
			return &exitError{code: 2, err: err}
		}
	}
	fmt.Fprintf(stderr, "game day %q: files in %s\n", plan.Name, *dir)
	rep, err := gameday.Run(ctx, plan, gameday.Options{Storepay: self, Banksim: *banksim, Dir: *dir, Progress: stderr})
	if err != nil {
		return &exitError{code: 2, err: fmt.Errorf("gameday: %w", err)}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	} else {
		err = rep.WriteText(stdout)
	}
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if !rep.Passed {
		return &exitError{code: 1, err: errors.New("")}
	}
	return nil
}
