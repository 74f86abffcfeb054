package orders

import (
	"errors"
	"sync/atomic"
)

// Bug names a money bug that storepay had and fixed. The simulator's
// teeth test (cmd/storepay-sim) plants each back, one at a time, to show
// that the simulator catches it: a simulator that catches nothing proves
// nothing. Nothing outside that test plants a bug; with none planted,
// every check below is one atomic load that is false.
type Bug uint32

// The bugs that can be planted back.
const (
	// BugVoidPinnedWithoutReverse: voiding a stored payment pinned to a
	// bank (its online outcome there unknown) took it out of the queue
	// and left whatever that bank holds charged.
	BugVoidPinnedWithoutReverse Bug = 1 << iota
	// BugResendAfterFailedLookup: a pinned store-and-forward record
	// whose lookup at its bank failed was sent again under its key,
	// which the bank may have forgotten (it keeps keys 7 days): a second
	// charge.
	BugResendAfterFailedLookup
	// BugRefundRepeatAfterPrune: a refund's repeat, once its stored
	// answer was pruned, refunded again.
	BugRefundRepeatAfterPrune
	// BugCaptureAnsweredAfterNothingDone: a capture the bank did not do
	// (503 while the terminal waited) kept its key as finished, and the
	// terminal's repeat was answered 200 with nothing captured.
	BugCaptureAnsweredAfterNothingDone
	// BugCancelLeavesPartialRefund: cancelling an order whose card sale
	// was partly refunded left the rest captured at the bank.
	BugCancelLeavesPartialRefund
	// BugSettledUndoCountedDone: a bank's refusal to reverse an approval
	// it had settled was taken as the reversal, leaving the card charged
	// for a payment the terminal heard as declined.
	BugSettledUndoCountedDone
	// BugNoLookupForKeptFailure: an operation whose bank kept a 5xx as
	// its key's answer was only ever repeated, never looked up, and
	// stayed unresolved for good.
	BugNoLookupForKeptFailure
	// BugAckBeforeDurable: an offline payment's answer was made durable
	// before the payment and its queue record: a crash between the two
	// left a terminal told "stored" of a payment storepay never had.
	BugAckBeforeDurable
)

// Bugs lists every bug that can be planted, for the teeth test.
var Bugs = []Bug{BugVoidPinnedWithoutReverse, BugResendAfterFailedLookup, BugRefundRepeatAfterPrune,
	BugCaptureAnsweredAfterNothingDone, BugCancelLeavesPartialRefund, BugSettledUndoCountedDone,
	BugNoLookupForKeptFailure, BugAckBeforeDurable}

func (b Bug) String() string {
	switch b {
	case BugVoidPinnedWithoutReverse:
		return "void-pinned-without-reverse"
	case BugResendAfterFailedLookup:
		return "resend-after-failed-lookup"
	case BugRefundRepeatAfterPrune:
		return "refund-repeat-after-prune"
	case BugCaptureAnsweredAfterNothingDone:
		return "capture-answered-after-nothing-done"
	case BugCancelLeavesPartialRefund:
		return "cancel-leaves-partial-refund"
	case BugSettledUndoCountedDone:
		return "settled-undo-counted-done"
	case BugNoLookupForKeptFailure:
		return "no-lookup-for-kept-failure"
	case BugAckBeforeDurable:
		return "ack-before-durable"
	}
	return "bug?"
}

var planted atomic.Uint32

// PlantForTest plants b back until the returned function is called. For
// the simulator's teeth test only.
func PlantForTest(b Bug) (undo func()) {
	planted.Or(uint32(b))
	return func() { planted.And(^uint32(b)) }
}

// Planted reports whether b is planted.
func Planted(b Bug) bool { return planted.Load()&uint32(b) != 0 }

var errPlantedRollback = errors.New("planted bug: rolled back")
