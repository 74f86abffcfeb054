package orders

import "fmt"

// The downstream idempotency keys and references of every bank call a
// payment makes, derived here and nowhere else. A key names one bank
// operation: every repeat of that operation, at any URL of its bank, after
// any crash, carries the same key, so the bank does the work at most once.
// Two different operations never share a key, or the bank would refuse the
// second as a reused key (or, worse, answer it with the first's result).

// authKey is the key of a payment's online authorization. It is also its
// reference, the payment id, which the bank prints in its settlement
// report and by which storepay looks a payment up.
func authKey(paymentID string) string { return paymentID }

// storedAdviceKey is the key of an unpinned store-and-forward advice: a
// payment no bank took online, forwarded later as stored: true. Another
// body than the online request's, so another key: a bank that kept the
// online key (answered "not processed") would refuse the advice as reused.
func storedAdviceKey(paymentID string) string { return paymentID + ":stored" }

// captureKey names the captured total: a capture the bank refused (nothing
// done) may be asked again for another amount. Two captures cannot both
// succeed: the bank answers already_captured, and a capture whose outcome
// is unknown is finished under its own key before another can start.
func captureKey(paymentID string, total int64) string {
	return fmt.Sprintf("%s:capture:%d", paymentID, total)
}

// voidKey is the key of the reversal that voids an authorization or sale
// (a terminal's void, or a cancel's).
func voidKey(paymentID string) string { return paymentID + ":void" }

// undoKey is the key of the reversal of an approval found after an
// unknown outcome; settledUndoKey that of the refund when the bank had
// settled it; undoByReferenceKey that of the reversal by reference when
// no authorization id is known.
func undoKey(paymentID string) string            { return paymentID + ":reverse" }
func settledUndoKey(paymentID string) string     { return paymentID + ":refund-settled" }
func undoByReferenceKey(paymentID string) string { return paymentID + ":reverse-by-reference" }

// refundKey is a refund's key and reference: the refund's own id, so a
// second refund of the same payment is another operation.
func refundKey(refundID string) string { return refundID }
