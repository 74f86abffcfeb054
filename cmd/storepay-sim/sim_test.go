package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"storepay/orders"
)

// simOptions are the options every test of the simulator runs with.
func simOptions(t *testing.T) options {
	return options{dir: t.TempDir(), steps: 400}
}

// A batch of seeds runs clean: nothing charged twice, nothing lost,
// nothing left owed. (CI runs 500 more with the command itself, without
// the race detector; see .ci/test.)
func TestSeeds(t *testing.T) {
	n := 40
	if raceEnabled {
		n = 16
	}
	for _, r := range runSeeds(context.Background(), 1, n, 2, simOptions(t)) {
		if len(r.violations) > 0 {
			t.Errorf("seed %d: %s\n  last lines:\n    %s", r.seed, strings.Join(r.violations, "\n  "),
				strings.Join(r.trace[max(0, len(r.trace)-30):], "\n    "))
		}
	}
}

// A seed replays exactly: the same trace, line for line.
func TestSeedReplays(t *testing.T) {
	for _, seed := range []int64{7, 96, 1531} {
		a := runSeed(seed, simOptions(t))
		b := runSeed(seed, simOptions(t))
		if !slices.Equal(a.trace, b.trace) {
			for i := range min(len(a.trace), len(b.trace)) {
				if a.trace[i] != b.trace[i] {
					t.Fatalf("seed %d diverges at line %d:\n  %s\n  %s", seed, i+1, a.trace[i], b.trace[i])
				}
			}
			t.Fatalf("seed %d: traces of %d and %d lines", seed, len(a.trace), len(b.trace))
		}
	}
}

// The seeds that found the money bugs the simulator found, each kept
// once the bug was fixed. The workload they ran is this one: a change to
// the workload changes what a seed does, and these stay as seeds that
// once mattered (the bug's test lives on in the seed batches).
// regressionSeeds are the seeds that found money bugs, each replayed in
// the world it was found in: those found before the simulator covered
// ISO 8583 in acquirer-json-only worlds (-json-only), which replay those
// runs message for message.
var regressionSeeds = []struct {
	seed     int64
	jsonOnly bool
	bug      string
}{
	{96, true, "two holders of one authorization: an approval overwritten by the other's nothing done, stored unpinned, voided while charged"},
	{47, true, "a pinned stored record whose bank kept a 500 for a declined authorization, repeated forever"},
	{7, true, "a refund behind a bank that kept a 500 as its key's answer, never ended"},
	{135, true, "the refund of a settled approval behind a kept 500, never ended"},
	{267, true, "a void repeated after a crash, answered 503, ended as not done while the first attempt had reversed the sale"},
	{556, true, "a resolver repeat under a key the bank had forgotten: a second charge"},
	{982, true, "a capture repeated under a forgotten key, refused already_captured, left authorized while captured"},
	{1531, true, "a call's attempts went on past its budget, under a key the bank had forgotten: a second charge"},
	{112530, true, "a capture's repeat after 72 hours, its key replaced on the payment by a later refund's, refused payment_not_authorized"},
	{158, false, "ISO: a sale repeated under its RRN after its reversal advice was sent, answered with its first approval"},
	{9198, false, "ISO: a 91 to the repeat of a sale the switch had approved, read as nothing done: declined while charged"},
	{9210, false, "ISO: a void whose reversal the switch refused (settled) and whose refund was not sent, answered voided"},
	{334936, false, "a cancel's answer not kept (full disk) sent as 200: its repeat heard the order as it was later, other bytes"},
	{334952, false, "a refund's reports read as the key was fresh, repeated 8 days later (a process suspended mid-pass) under a forgotten key: refunded twice"},
	{363416, false, "ISO: a \"not sent\" of one failover URL written over the other's approval: the sale declined while the switch kept it captured"},
	{405931, false, "ISO: a sale's approval not kept (full disk) while the payment was captured: its cancel's refund owed for ever"},
	{409158, false, "ISO: a sale's approval not kept (full disk): after a crash its refund's repeat was refused not_captured while the bank had refunded"},
	{409660, false, "ISO: the same, on another interleaving"},
}

func TestRegressionSeeds(t *testing.T) {
	for _, c := range regressionSeeds {
		t.Run(fmt.Sprint(c.seed), func(t *testing.T) {
			opts := simOptions(t)
			opts.jsonOnly = c.jsonOnly
			if r := runSeed(c.seed, opts); len(r.violations) > 0 {
				t.Errorf("seed %d (%s): %s", c.seed, c.bug, strings.Join(r.violations, "; "))
			}
		})
	}
}

// Teeth: each money bug storepay once had, planted back, is caught within
// 1,000 seeds. A simulator that catches none of them proves nothing.
func TestTeeth(t *testing.T) {
	if testing.Short() {
		t.Skip("the teeth test runs up to 1,000 seeds per bug")
	}
	for _, bug := range orders.Bugs {
		t.Run(bug.String(), func(t *testing.T) {
			undo := orders.PlantForTest(bug)
			defer func() { undo() }()
			opts := simOptions(t)
			for first := int64(1); first <= 1000; first += 8 {
				for _, r := range runSeeds(context.Background(), first, 8, 2, opts) {
					if len(r.violations) == 0 {
						continue
					}
					// Caught only if the seed runs clean without the bug.
					undo()
					clean := len(runSeed(r.seed, opts).violations) == 0
					undo = orders.PlantForTest(bug)
					if clean {
						t.Logf("%s caught by seed %d: %s", bug, r.seed, r.violations[0])
						return
					}
					t.Errorf("seed %d fails without %s planted: %v", r.seed, bug, r.violations)
				}
			}
			t.Errorf("%s planted: 1,000 seeds ran clean", bug)
		})
	}
}
