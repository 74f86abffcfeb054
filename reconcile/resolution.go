package reconcile

import (
	"fmt"

	"storepay/orders"
)

// Action is what reconciliation proposes for a discrepancy. It is only a
// proposal: reconciliation never calls a bank or changes a payment. A
// manager accepts or rejects it in the console ([Decide]); whoever acts on
// an accepted proposal does the work through the payments API.
type Action string

// Actions.
const (
	// ResubmitCapture: the bank never settled a capture the store made.
	ResubmitCapture Action = "resubmit_capture"
	// ResubmitRefund: the bank never settled a refund the store made.
	ResubmitRefund Action = "resubmit_refund"
	// ReverseDuplicateCharge: the bank charged the card twice.
	ReverseDuplicateCharge Action = "reverse_duplicate_charge"
	// RecoverDuplicateRefund: the bank refunded the card twice.
	RecoverDuplicateRefund Action = "recover_duplicate_refund"
	// ReverseCharge: the bank charged a sale the store voided or declined.
	ReverseCharge Action = "reverse_charge"
	// RefundDifference: the bank charged more than the store's amount.
	RefundDifference Action = "refund_difference"
	// ClaimDifference: the bank settled less than the store's amount.
	ClaimDifference Action = "claim_difference"
	// ReviewChargeback: a card holder disputed a payment.
	ReviewChargeback Action = "review_chargeback"
	// ForwardStored: a sale is still waiting in store-and-forward.
	ForwardStored Action = "forward_stored"
	// WriteOff: the bank declined a sale after forward; the goods are gone.
	WriteOff Action = "write_off"
	// Investigate: nothing safe can be proposed without a person looking.
	Investigate Action = "investigate"
)

// Resolution is the proposal attached to a discrepancy, and what a
// manager decided about it.
type Resolution struct {
	// ID is the proposal's id for [Decide]; 0 until the run is saved.
	ID          int64  `json:"id,omitempty"`
	Action      Action `json:"action"`
	Description string `json:"description"`
	// Amount is the money the action would move, in the item's currency.
	Amount int64 `json:"amount"`
	// Status is proposed, accepted, rejected or withdrawn (a later run
	// found the row that was missing).
	Status    string `json:"status"`
	Note      string `json:"note,omitempty"`
	DecidedBy string `json:"decided_by,omitempty"`
}

// Proposal statuses.
const (
	Proposed  = "proposed"
	Accepted  = "accepted"
	Rejected  = "rejected"
	Withdrawn = "withdrawn"
)

// propose attaches the proposal for a discrepancy. The action depends on
// the category and, for a row the store has no capture of, on what the
// store knows of the payment (storeStatus).
func propose(it *Item, storeStatus string) {
	m := func(v int64) string { return orders.FormatMoney(v, it.Currency) }
	var r Resolution
	switch it.Category {
	case MissingAtBank:
		if it.Kind == kindRefund.String() {
			r = Resolution{Action: ResubmitRefund, Amount: it.StoreAmount, Description: fmt.Sprintf(
				"Re-submit refund %s of %s (%s) to %s, once the next day's report confirms it is still missing.",
				it.RefundID, it.PaymentID, m(-it.StoreAmount), it.Gateway)}
		} else {
			r = Resolution{Action: ResubmitCapture, Amount: it.StoreAmount, Description: fmt.Sprintf(
				"Re-submit the capture of %s for %s to %s, once the next day's report confirms it is still missing (a capture late in the evening settles a day later).",
				m(it.StoreAmount), it.PaymentID, it.Gateway)}
		}
	case DuplicateAtBank:
		if it.Kind == kindRefund.String() {
			r = Resolution{Action: RecoverDuplicateRefund, Amount: it.BankAmount, Description: fmt.Sprintf(
				"Ask %s to recover %s (%s), a second refund of %s.", it.Gateway, it.PSPReference, m(-it.BankAmount), it.RefundID)}
		} else {
			r = Resolution{Action: ReverseDuplicateCharge, Amount: it.BankAmount, Description: fmt.Sprintf(
				"Reverse %s (%s) at %s: a second charge of the card for %s.", it.PSPReference, m(it.BankAmount), it.Gateway, it.PaymentID)}
		}
	case AmountMismatch:
		diff := it.BankAmount - it.StoreAmount
		switch {
		case it.Kind == kindCapture.String() && diff > 0:
			r = Resolution{Action: RefundDifference, Amount: diff, Description: fmt.Sprintf(
				"Refund the card holder %s, what %s settled beyond the store's %s for %s.", m(diff), it.Gateway, m(it.StoreAmount), it.PaymentID)}
		case it.Kind == kindCapture.String():
			r = Resolution{Action: ClaimDifference, Amount: -diff, Description: fmt.Sprintf(
				"Claim %s from %s: it settled %s of the store's %s for %s.", m(-diff), it.Gateway, m(it.BankAmount), m(it.StoreAmount), it.PaymentID)}
		default:
			r = Resolution{Action: Investigate, Amount: diff, Description: fmt.Sprintf(
				"Ask %s why refund %s settled as %s when the store refunded %s.", it.Gateway, it.PSPReference, m(-it.BankAmount), m(-it.StoreAmount))}
		}
	case CurrencyMismatch:
		r = Resolution{Action: Investigate, Amount: it.BankAmount, Description: fmt.Sprintf(
			"Ask %s why it settled %s in %s when the store charged %s.", it.Gateway, it.PSPReference, it.BankCurrency, m(it.StoreAmount))}
	case MissingInStore:
		switch {
		case it.Kind == "chargeback":
			r = Resolution{Action: ReviewChargeback, Amount: it.BankAmount, Description: fmt.Sprintf(
				"Review the chargeback %s of %s with %s: accept it or send evidence of the sale.", it.PSPReference, m(-it.BankAmount), it.Gateway)}
		case it.Kind == kindCapture.String() && (storeStatus == "voided" || storeStatus == "declined"):
			r = Resolution{Action: ReverseCharge, Amount: it.BankAmount, Description: fmt.Sprintf(
				"Ask %s to reverse %s (%s): the store %s this sale, the card holder must not pay for it.", it.Gateway, it.PSPReference, m(it.BankAmount), storeStatus)}
		default:
			r = Resolution{Action: Investigate, Amount: it.BankAmount, Description: fmt.Sprintf(
				"Find out what the %s that %s settled under %s (reference %s) is: check the till's records, then have the card holder refunded or record the sale.",
				m(abs(it.BankAmount)), it.Gateway, it.PSPReference, ref(it))}
		}
	case NotForwarded:
		r = Resolution{Action: ForwardStored, Amount: it.StoreAmount, Description: fmt.Sprintf(
			"Replay %s from store-and-forward (manager API: POST /v1/saf/{id}/replay); if it expired, contact the customer.", it.PaymentID)}
	case DeclinedAfterForward:
		r = Resolution{Action: WriteOff, Amount: it.StoreAmount, Description: fmt.Sprintf(
			"Write off %s for %s (the goods were handed over offline and the bank declined the card), or ask the customer to pay again.", m(it.StoreAmount), it.PaymentID)}
	default:
		return
	}
	r.Status = Proposed
	it.Resolution = &r
}

func ref(it *Item) string {
	if it.MerchantReference != "" {
		return it.MerchantReference
	}
	if it.PaymentID != "" {
		return it.PaymentID
	}
	return it.PSPReference
}
