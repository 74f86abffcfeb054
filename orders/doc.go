// Package orders owns orders, payments and refunds and the one state
// machine that moves a payment between statuses.
//
// A card payment is written ahead: the intent (status pending, the bank
// call it is about to make in pending_op, the downstream idempotency key,
// the card sealed with the store's key) is committed before any bank is
// called; the outcome is committed, and the sealed card erased, before the
// terminal hears it. A bank call whose outcome is unknown is never guessed
// at: it stays pending_op until a same-key retry at the same bank gives a
// definitive answer. The [Service.Resolve] pass does that for every
// pending payment on start and then periodically, so nothing stays in
// limbo after a crash.
//
// The banks are reached through the small [Bank] interface
// (gateway.Router implements it) and store-and-forward through [Offline]
// (saf.Queue implements it); cmd/storepay wires them.
package orders
