package orders

import (
	"fmt"
	"slices"
)

// Op is the bank operation a payment has written ahead: committed before
// the bank is called, cleared in the transaction that records the bank's
// definitive answer. While a payment has an Op, something is owed to a
// bank and the resolver keeps at it until the bank answers.
type Op string

// Operations. Each is one bank call (or, for OpReverse, the lookup and
// reversal that undo what a bank may hold), repeated under the same key
// until it is answered.
const (
	OpNone      Op = ""
	OpAuthorize Op = "authorize" // the authorization itself, its outcome not known yet
	// OpReverse: the terminal heard declined (or voided) while a bank may
	// hold an approval: whatever it holds under the payment's reference is
	// reversed, or refunded once settled.
	OpReverse Op = "reverse"
	OpCapture Op = "capture"
	OpVoid    Op = "void"   // a terminal's void: refused when the bank has settled the sale
	OpRefund  Op = "refund" // a terminal's refund
	// OpCancelVoid and OpCancelRefund return a cancelled order's money:
	// they never end while the bank keeps any of it. A void the bank
	// refuses as settled becomes a refund of what is left.
	OpCancelVoid   Op = "cancel_void"
	OpCancelRefund Op = "cancel_refund"
)

// State is where a payment is: its status and the operation it owes a
// bank. The zero State is a payment not written yet.
type State struct {
	Status Status
	Op     Op
}

func (s State) String() string {
	st := string(s.Status)
	if st == "" {
		st = "∅"
	}
	if s.Op == OpNone {
		return st
	}
	return st + " · " + string(s.Op)
}

// Event is what moves a payment: a terminal's request, a bank's answer, a
// timer, the forwarder's result or a manager's action.
type Event string

// Events. The table below says, for each state, which of them may happen
// and where they lead.
const (
	// A terminal's requests.
	EvCashTaken      Event = "cash_taken"       // a cash payment, captured at the till
	EvCardWritten    Event = "card_written"     // a card payment written ahead of its authorization
	EvCaptureAsked   Event = "capture_asked"    // capture written ahead
	EvVoidAsked      Event = "void_asked"       // void written ahead
	EvRefundAsked    Event = "refund_asked"     // refund written ahead
	EvCancelAsked    Event = "cancel_asked"     // the order was cancelled: return its money
	EvCashReturned   Event = "cash_returned"    // cash handed back (void or cancel)
	EvStoredVoided   Event = "stored_voided"    // a stored payment left the queue unforwarded
	EvPinnedVoided   Event = "pinned_voided"    // ...one a bank may hold: reverse whatever it holds
	EvRefundedPart   Event = "refunded_partly"  // a refund left part of the capture
	EvRefundedInFull Event = "refunded_in_full" // a refund took the rest of the capture

	// A bank's answers to an authorization.
	EvApprovedSale    Event = "approved_sale"    // approved and captured
	EvApprovedPreauth Event = "approved_preauth" // approved, to be captured later
	EvDeclined        Event = "declined"         // declined, or refused (4xx): nothing charged
	// No bank decided while the terminal waits: store-and-forward takes
	// it, or it is declined (offline rules, require_online, nothing on).
	EvStoredOffline   Event = "stored_offline"
	EvDeclinedOffline Event = "declined_offline"
	// Declined to the terminal while the bank's answer is unknown.
	EvDeclinedUnknown Event = "declined_unknown"

	// A bank's answers to the other operations.
	EvCaptured Event = "captured"
	EvVoided   Event = "voided"
	EvSettled  Event = "settled"   // a cancel's void refused: the bank settled the sale
	EvOpFailed Event = "op_failed" // refused (4xx), or nothing done while the terminal waits: the op ends undone
	EvUndone   Event = "undone"    // what the bank held was reversed or refunded, or it held nothing
	// EvUndoRefused: the bank would neither reverse nor refund an approval
	// it holds; the payment keeps the error for a manager.
	EvUndoRefused Event = "undo_refused"
	// EvRetry: no definitive answer (unknown, or the bank did nothing
	// while nobody waits): the same operation is repeated later, same key.
	EvRetry Event = "retry"
	// EvBankChosen: the bank about to be called is written down first.
	EvBankChosen Event = "bank_chosen"

	// Timers.
	EvNeverSent Event = "never_sent" // written ahead, never sent, its terminal never came back

	// The forwarder's results.
	EvForwardedSale    Event = "forwarded_sale"
	EvForwardedPreauth Event = "forwarded_preauth"
	EvForwardDeclined  Event = "forward_declined"
)

// Transition is one row of the payment machine.
type Transition struct {
	From  State
	Event Event
	To    State
}

func st(s Status, op Op) State { return State{s, op} }

// Machine is the payment state machine: every change of a payment's
// State is one of these rows, and [Service.transition] refuses anything
// else. docs/payment-machine.md is the same table for people; a test keeps
// the two equal.
//
// What the table makes impossible to write: a payment leaving an
// operation without a bank's definitive answer (every Op is left only by
// an answer event, EvRetry keeps it); a cancelled order's payment ending
// with money at the bank (cancel ops end only at voided or refunded);
// a second authorization of one payment (EvCardWritten only from ∅).
var Machine = []Transition{
	// Taken.
	{st("", OpNone), EvCashTaken, st(Captured, OpNone)},
	{st("", OpNone), EvCardWritten, st(Pending, OpAuthorize)},
	{st("", OpNone), EvStoredOffline, st(Stored, OpNone)},
	{st("", OpNone), EvDeclinedOffline, st(Declined, OpNone)},

	// The authorization.
	{st(Pending, OpAuthorize), EvBankChosen, st(Pending, OpAuthorize)},
	{st(Pending, OpAuthorize), EvApprovedSale, st(Captured, OpNone)},
	{st(Pending, OpAuthorize), EvApprovedPreauth, st(Authorized, OpNone)},
	{st(Pending, OpAuthorize), EvDeclined, st(Declined, OpNone)},
	{st(Pending, OpAuthorize), EvStoredOffline, st(Stored, OpNone)},
	{st(Pending, OpAuthorize), EvDeclinedOffline, st(Declined, OpNone)},
	{st(Pending, OpAuthorize), EvDeclinedUnknown, st(Declined, OpReverse)},
	{st(Pending, OpAuthorize), EvRetry, st(Pending, OpAuthorize)},
	{st(Pending, OpAuthorize), EvNeverSent, st(Declined, OpNone)},

	// Undoing what a bank may hold after an unknown outcome.
	{st(Declined, OpReverse), EvUndone, st(Declined, OpNone)},
	{st(Declined, OpReverse), EvUndoRefused, st(Declined, OpNone)},
	{st(Declined, OpReverse), EvRetry, st(Declined, OpReverse)},
	{st(Voided, OpReverse), EvUndone, st(Voided, OpNone)},
	{st(Voided, OpReverse), EvUndoRefused, st(Voided, OpNone)},
	{st(Voided, OpReverse), EvRetry, st(Voided, OpReverse)},

	// Store-and-forward.
	{st(Stored, OpNone), EvForwardedSale, st(Captured, OpNone)},
	{st(Stored, OpNone), EvForwardedPreauth, st(Authorized, OpNone)},
	{st(Stored, OpNone), EvForwardDeclined, st(DeclinedAfterForward, OpNone)},
	{st(Stored, OpNone), EvStoredVoided, st(Voided, OpNone)},
	{st(Stored, OpNone), EvPinnedVoided, st(Voided, OpReverse)},

	// A pre-authorization.
	{st(Authorized, OpNone), EvCaptureAsked, st(Authorized, OpCapture)},
	{st(Authorized, OpNone), EvVoidAsked, st(Authorized, OpVoid)},
	{st(Authorized, OpNone), EvCancelAsked, st(Authorized, OpCancelVoid)},
	{st(Authorized, OpCapture), EvCaptured, st(Captured, OpNone)},
	{st(Authorized, OpCapture), EvOpFailed, st(Authorized, OpNone)},
	{st(Authorized, OpCapture), EvRetry, st(Authorized, OpCapture)},
	{st(Authorized, OpVoid), EvVoided, st(Voided, OpNone)},
	{st(Authorized, OpVoid), EvOpFailed, st(Authorized, OpNone)},
	{st(Authorized, OpVoid), EvRetry, st(Authorized, OpVoid)},
	{st(Authorized, OpCancelVoid), EvVoided, st(Voided, OpNone)},
	{st(Authorized, OpCancelVoid), EvRetry, st(Authorized, OpCancelVoid)},

	// A captured payment (card or cash).
	{st(Captured, OpNone), EvVoidAsked, st(Captured, OpVoid)},
	{st(Captured, OpNone), EvRefundAsked, st(Captured, OpRefund)},
	{st(Captured, OpNone), EvCancelAsked, st(Captured, OpCancelVoid)},
	{st(Captured, OpNone), EvCashReturned, st(Voided, OpNone)},
	{st(Captured, OpNone), EvRefundedPart, st(PartiallyRefunded, OpNone)},
	{st(Captured, OpNone), EvRefundedInFull, st(Refunded, OpNone)},
	{st(Captured, OpVoid), EvVoided, st(Voided, OpNone)},
	{st(Captured, OpVoid), EvOpFailed, st(Captured, OpNone)},
	{st(Captured, OpVoid), EvRetry, st(Captured, OpVoid)},
	{st(Captured, OpRefund), EvRefundedPart, st(PartiallyRefunded, OpNone)},
	{st(Captured, OpRefund), EvRefundedInFull, st(Refunded, OpNone)},
	{st(Captured, OpRefund), EvOpFailed, st(Captured, OpNone)},
	{st(Captured, OpRefund), EvRetry, st(Captured, OpRefund)},
	{st(Captured, OpCancelVoid), EvVoided, st(Voided, OpNone)},
	{st(Captured, OpCancelVoid), EvSettled, st(Captured, OpCancelRefund)},
	{st(Captured, OpCancelVoid), EvRetry, st(Captured, OpCancelVoid)},
	{st(Captured, OpCancelRefund), EvRefundedInFull, st(Refunded, OpNone)},
	{st(Captured, OpCancelRefund), EvRetry, st(Captured, OpCancelRefund)},

	// Partly refunded.
	{st(PartiallyRefunded, OpNone), EvRefundAsked, st(PartiallyRefunded, OpRefund)},
	{st(PartiallyRefunded, OpNone), EvCancelAsked, st(PartiallyRefunded, OpCancelRefund)},
	{st(PartiallyRefunded, OpNone), EvRefundedPart, st(PartiallyRefunded, OpNone)},
	{st(PartiallyRefunded, OpNone), EvRefundedInFull, st(Refunded, OpNone)},
	{st(PartiallyRefunded, OpRefund), EvRefundedPart, st(PartiallyRefunded, OpNone)},
	{st(PartiallyRefunded, OpRefund), EvRefundedInFull, st(Refunded, OpNone)},
	{st(PartiallyRefunded, OpRefund), EvOpFailed, st(PartiallyRefunded, OpNone)},
	{st(PartiallyRefunded, OpRefund), EvRetry, st(PartiallyRefunded, OpRefund)},
	{st(PartiallyRefunded, OpCancelRefund), EvRefundedInFull, st(Refunded, OpNone)},
	{st(PartiallyRefunded, OpCancelRefund), EvRetry, st(PartiallyRefunded, OpCancelRefund)},
}

// next returns where ev leads from, or an error when the machine has no
// such row.
func next(from State, ev Event) (State, error) {
	for _, t := range Machine {
		if t.From == from && t.Event == ev {
			return t.To, nil
		}
	}
	return State{}, fmt.Errorf("illegal transition: %s on %s", ev, from)
}

// Events lists the events the machine knows, in table order.
func Events() []Event {
	var out []Event
	for _, t := range Machine {
		if !slices.Contains(out, t.Event) {
			out = append(out, t.Event)
		}
	}
	return out
}
