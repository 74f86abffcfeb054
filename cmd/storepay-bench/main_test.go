package main

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"testing"
)

// Bad command lines are refused with a usage error before anything is
// built or started: the benches are not run in CI, their flags are.
func TestBadFlagsAreRefused(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"nonsense"},
		{"online", "-n", "0"},
		{"online", "-c", "-1"},
		{"online", "-latency", "-1ms"},
		{"online", "stray"},
		{"protocols", "-rounds", "0"},
		{"protocols", "-latency", "-5ms"},
		{"restart", "-queued", "0"},
		{"restart", "-queued", "10", "-first", "11"},
		{"soak", "-duration", "0s"},
		{"soak", "-duration", "1m", "-interval", "2m"},
		{"soak", "-outage-every", "1m", "-outage-for", "1m"},
		{"failover", "-outage", "flood"},
		{"failover", "-phase", "0s"},
		{"offline", "-n", "0"},
		{"drain", "-rate", "0"},
		{"drain", "-concurrency", "0"},
		{"reconcile", "-n", "0"},
		{"reconcile", "-sqlite3", "/nonexistent/sqlite3"},
		{"online", "-bin", "/nonexistent"},
		{"online", "-no-such-flag"},
	} {
		var out, errb bytes.Buffer
		err := run(context.Background(), args, &out, &errb)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: got %v, want a usage error", args, err)
		}
	}
}

func TestHelpListsEveryBench(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"help"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	for name := range benches {
		if !regexp.MustCompile(`(?m)^  ` + name + ` `).MatchString(out.String()) {
			t.Errorf("usage does not list %s:\n%s", name, out.String())
		}
	}
}
