// Package saf is store-and-forward: card payments accepted while no bank
// could decide them, kept in SQLite and forwarded to a bank later, exactly
// once.
//
// Admission ([Queue.Admit]) runs inside the payment's own write
// transaction, so a payment is `stored` if and only if its record is in
// the queue, and the terminal hears `stored` only after both are on disk.
// The offline rules (floor limit, total limit, per-card velocity, hot
// cards) are checked in that same transaction.
//
// The forwarder ([Queue.Open]) sends due records to banks: a scanner hands
// records to a small worker pool per bank (bounded concurrency, a rate
// limit, so a recovering bank is not stampeded). Before a record is sent,
// the bank it goes to is written to the record: a record pinned to a bank
// is only ever repeated there, with the payment id as the idempotency key,
// so forwarding cannot charge a card twice, whatever crashes. Each record
// has its own attempts and backoff, so one bad record never holds up the
// others; a record that keeps failing is held for a manager.
//
// The emergency stop is read from the database right before every bank
// call ([gateway.WithGate]); anything unreadable counts as stop.
package saf
