// Package reconcile is the nightly batch that holds the store's ledger
// against every bank's settlement report for one business date, and tells
// a manager in the morning what does not add up and what to do about it.
//
// # How data flows
//
//  1. [LoadLedger] reads the store's side from SQLite in one snapshot: card
//     captures (business date = UTC date of captured_at) and confirmed
//     refunds (UTC date of updated_at) from the day before to the day
//     after, indexed by the reference the bank echoes (payment id, refund
//     id); sales still in store-and-forward; sales declined after
//     forward. Cash never reaches a bank and is left out.
//  2. [Match] streams each bank's report ([SettlementReader]: one line in
//     memory at a time) and settles each row against its store record.
//  3. What no row settled, and the rows that settled nothing, are
//     classified into the contract's categories, each with a sentence and
//     a proposed [Resolution]; totals are summed per bank and category.
//  4. [Save] records the run: it replaces the date's previous run whole.
//     [Last] reads it back for GET /v1/reconciliations/{date} and the
//     console; [Nights] lists the nights; [Decide] records a manager's
//     answer to a proposal.
//
// # Matching rules
//
// A Settled row settles the store capture whose payment id is its
// merchant_reference, a Refunded row the refund whose id is its
// merchant_reference (falling back, for either, to the store's record of
// the bank's own id, the psp_reference). A Refunded row that names the
// payment rather than the refund settles a refund of that payment; one
// under a refund id the store does not know settles, once every row is
// read, a refund of that payment and amount that no row settled. Rows of
// other merchants are ignored; Fee rows only count in the totals; a
// Chargeback is always missing_in_store (the store has no record of a
// dispute), against the payment its references name. A row whose sign
// contradicts its type (a negative capture, a positive refund or
// chargeback) is malformed.
//
// The very same row twice (every field equal: a re-sent batch) is counted
// once and noted in the summary. The same authorization settled again by
// any other row (another batch, another amount), in this report or a
// neighbouring night's, and the same merchant_reference under two
// psp_references, are a double charge (duplicate_at_bank): the row
// carrying the store's own authorization id is the store's payment, the
// other one the extra charge. A sale the store holds as stored or declined
// after forward that a bank settled after all is one missing_in_store
// item, which says what the store recorded.
//
// # Neighbouring days
//
// A capture late in the evening can land in the next day's report, and a
// bank's clock can book a sale made just after midnight on the day before.
// So the ledger spans D-1..D+1 and the rule is: every row is reported in
// the run of the report it appears in, and every store record is reported
// once across nights:
//
//   - A row of D's report that settles a record of D-1 or D+1 is matched in
//     D's run ("a day late"), and it withdraws the missing_at_bank proposal
//     that D-1's run may have made for that record. If the other night's
//     run had already settled that record, the row is a copy (the very
//     same row: counted once) or a second charge (duplicate_at_bank).
//   - A record of D that D's report does not settle is missing_at_bank in
//     D's run, unless the run of another date already settled it (then it
//     is only counted in the summary as settled in a neighbouring file).
//     Its proposal says to wait for the next night before re-submitting.
//   - A record of D-1 or D+1 that D's report does not settle is not D's
//     business: its own night reports it. Nothing is missing twice.
//
// Runs are meant to go in date order (cron does); re-running an earlier
// date after a later one gives the answer the later runs imply.
//
// # Store-and-forward
//
// A card sale with payments.status stored is not_forwarded in every run
// of a date on or after the day it was sold, for as long as it waits: a
// manager sees it each morning until it is forwarded or voided. The
// saf_records table, when it exists, only adds its word (expired, held) to
// the sentence. A sale declined after forward is declined_after_forward in
// the run of the date the bank declined it, when the news arrived.
//
// # Performance
//
// The ledger keeps every string in one arena and its records pointer-free,
// a map from reference to record index is the only index, and each report
// is streamed: memory grows with the store's records, not with the
// reports. Matched items are materialized one at a time when they are
// written. Writes go in transactions of a few thousand rows, so that the
// tills, which share the database's single writer, never wait long behind
// the batch. See docs/performance.md for figures.
package reconcile
