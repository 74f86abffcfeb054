package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"testing"
)

// bench offline runs end to end and prints every figure the performance
// page records: the stored rate, the raw commit rate, their ratio and the
// floor, and the CPU each costs. The figures themselves are for docs/performance.md, not asserted.
func TestBenchOfflinePrintsItsFigures(t *testing.T) {
	var out, errb bytes.Buffer
	err := run(context.Background(), []string{"bench", "offline", "-n", "200", "-c", "8", "-dir", t.TempDir()},
		func(string) string { return "" }, &out, &errb)
	if err != nil {
		t.Fatalf("bench offline: %v\n%s", err, errb.String())
	}
	for _, re := range []string{
		`stored payments/s \(durable, acknowledged\)\s+[0-9]+`,
		`outcomes\s+map\[stored:200\], errors 0`,
		`raw SQLite single-row commits/s .* mean\s+[0-9]+`,
		`ratio stored/raw\s+[0-9.]+`,
		`floor: .*\s+[0-9]+/s \(ratio to raw [0-9.]+\)`,
		`storepay\s+[0-9]+ µs on [0-9.]+ cores busy: at most\s+[0-9]+/s`,
		`floor\s+[0-9]+ µs on [0-9.]+ cores busy: at most\s+[0-9]+/s`,
		`raw\s+[0-9]+ µs per commit, of [0-9]+ µs`,
	} {
		m := regexp.MustCompile(re).FindString(out.String())
		if m == "" {
			t.Errorf("no line matching %q in:\n%s", re, out.String())
		}
	}
	if m := regexp.MustCompile(`ratio stored/raw\s+([0-9.]+)`).FindStringSubmatch(out.String()); m != nil {
		if r, _ := strconv.ParseFloat(m[1], 64); r <= 0 {
			t.Errorf("ratio %v: nothing was stored", r)
		}
	}
}
