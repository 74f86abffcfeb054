// Package banksim is a simulated acquirer (bank) that serves the whole
// acquirer-json protocol (acquirer-protocol.md) and writes settlement
// reports (settlement-format.md). storepay's tests, the demo and outage
// rehearsals use it in place of a real bank; cmd/banksim runs it as a
// process.
//
// A [Sim] is one bank: one ledger behind any number of protocol listeners
// (a bank's failover URLs, [Sim.Listen]) plus an admin listener
// ([Sim.ListenAdmin], [Sim.AdminHandler]) kept apart so that a refusing
// protocol port does not cut the admin off.
//
// A protocol request flows through one pipeline (protocol.go):
//
//  1. it is counted per listener and endpoint ([Ledger.Requests]);
//  2. the installed [Faults] are drawn for it: a blackhole holds it, or it
//     is answered 401, 429, 503 not_processed or 500 without any work;
//  3. the API key is checked (401);
//  4. a POST takes its Idempotency-Key (idempotency.go): the same key with
//     the same canonical JSON body replays the first answer with
//     Idempotent-Replayed: true, with another body is 422
//     idempotency_key_reuse, and while the first request still runs is 409
//     idempotency_key_in_use;
//  5. the work is done once on the ledger (ops.go), after any Latency,
//     and its answer recorded under the key;
//  6. the answer is written, or with DropAfterApply the connection is
//     reset instead.
//
// The same ledger can also be served as an ISO 8583 switch
// (iso8583-profile.md): [Sim.ListenISO8583] starts a tcp:// listener
// (iso.go, isoops.go) that shares the admin API, the faults (Unauthorized,
// NotProcessed and Error answer 03, 91 and 96) and the settlement
// reports, whose rows for ISO operations carry the RRN as psp_reference.
//
// The ledger keeps every authorization and refund with the card's last
// four digits only; the full card number is never stored or logged.
// Business dates are the UTC date of a booking (optionally the next one
// after [Config.LateCutoff]); a date is closed once the clock
// ([Config.Now]) has passed it or when closed through [Sim.CloseDay], and
// only then is its report served (settlement.go).
//
// Tests read the ledger with [Sim.Ledger] to prove what the bank did, for
// example [Ledger.ChargesFor] (no double charge) or [Ledger.Calls] (the
// second bank was never called).
package banksim
