// Package iso8583 is storepay's side of the ISO 8583 profile
// (iso8583-profile.md, protocol "iso8583"): the message spec and framing,
// typed messages, the response codes, a client that keeps one long-lived
// connection per URL, and an adapter to [gateway.Endpoint]. It is the
// protocol layer only: the durable parts (STANs, RRNs written ahead, the
// advices' store-and-forward) belong to the payment machine, which wires
// them in through small interfaces ([STANAllocator], [Traces]).
//
// # Layers, bottom up
//
//   - spec.go, fields.go: [Spec] is moov-io's specs.Spec87ASCII plus
//     field 70, with space padding on the fixed alphanumeric fields;
//     [Fields] is one message as text ("" = absent), packed and unpacked
//     under it; [ReadFrame] and [Frame] handle the 2-byte big-endian
//     length header and refuse a length of 0 or above [MaxMessageLength].
//     Anything malformed is a *[BadInputError] with a Reason.
//   - messages.go: one type per request of the profile — [Authorization]
//     (0100), [Purchase] and [Refund] (0200), [Completion] and
//     [OfflineAdvice] (0220/0221), [Reversal] (0420/0421), and
//     [NetworkFields] (0800 sign-on and echo) — each built from a [Trace]
//     the caller chose (STAN, RRN, field 7) and naming earlier messages by
//     an [Original] (field 90). [Answer] is what comes back.
//   - codes.go: [Classify] turns a response code into storepay's error
//     kinds: 00 and the declines (05, 14, 41, 43, 51, 54) are answers; 03
//     is KindUnauthorized; 12, 13 and 30 KindRejected; 91
//     KindNotProcessed; 96 and any code the profile does not name
//     KindUnknown.
//   - client.go, session.go: a [Client] per URL (tcp:// or tls://). A
//     background worker dials, signs on (0800/001, waiting for 0810 with
//     00 before anything else), and reconnects with exponential backoff.
//     Requests share the connection, several in flight, matched to their
//     answers by STAN and terminal_id. Failures are classified as the
//     profile says: refused connection or sign-on, or a context done
//     before the write, is KindNotSent; a timeout after the write, or the
//     connection closed after it, is KindUnknown. An answer that comes
//     after its caller gave up is a late answer: logged, counted
//     (storepay.iso8583.late_answers), handed to Config.OnLateAnswer, and
//     nothing else. Bad input from the switch (a bad length header, an
//     oversized or malformed message, an unknown MTI, an answer nobody
//     awaits) is logged and counted (storepay.iso8583.bad_input), and the
//     connection is dropped and rebuilt.
//   - endpoint.go: [Endpoint] implements [gateway.Endpoint] on a Client:
//     Authorize is a 0200 sale, a 0100 pre-authorization, or a 0220 offline
//     advice when Stored; Capture a 0220 completion; Reverse a 0420;
//     Refund a 0200 refund; Health an echo. Find and Settlement are refused
//     (KindRejected, not_supported): ISO 8583 has no lookup, and its
//     settlement reports come as files. It keeps a bounded in-memory
//     [Record] of every operation (what field 90 will name, the auth code,
//     the card sealed by the vault) and exposes it for the caller to
//     persist. [Endpoint.ReverseRecord] is the reversal advice of an
//     operation by its record: how an unknown outcome is resolved.
//
// # What the integrator adds
//
// The profile's rules of money live above this package:
//
//  1. A durable STAN counter per terminal_id, as the [STANAllocator] of
//     the Client and of the caller's own messages: advanced and committed
//     before use, so that a restart never hands out a STAN whose message
//     may still be unanswered. Two requests in flight with the same STAN
//     and terminal are refused (KindRejected, duplicate_stan).
//  2. The RRN of each bank operation written ahead ([Traces]): the trace
//     (STAN, RRN, field 7) is committed with the operation's intent before
//     the message is sent, and every repeat of the operation (0221, 0421,
//     or a resend of a 0100 or 0200) carries the same trace. A reversal is
//     its own operation with its own trace. The bank does the work of an
//     RRN at most once per terminal and answers a repeat with the first
//     answer: the RRN is this protocol's idempotency key.
//  3. The records of field 90 persisted with the operations
//     ([Endpoint.Record] after each call that changes one, or
//     [Answer.Sent] with the typed methods) and restored after a restart
//     ([Endpoint.Restore]); without its record a capture, refund or void
//     is refused without sending anything (unknown_authorization).
//  4. The card kept, sealed, for as long as a message may follow: every
//     financial message of the profile carries field 2, completions,
//     refunds and reversals included. storepay today erases the sealed
//     card once a payment's outcome is committed; an ISO gateway needs it
//     until the payment can no longer be captured, voided or refunded.
//     Without a vault, or without the card, those calls are refused
//     (card_unavailable).
//  5. Advices through store-and-forward: an offline advice (0220, 38 =
//     Y3), a completion (0220) and a reversal (0420) must be delivered.
//     When the answer does not come, or is 91 or 96, the advice is sent
//     again as a repeat (Repeat: true, same trace: 0221, 0421) until an
//     answer with any other code comes, across restarts. For an offline
//     advice 00 is a charge and a decline is declined_after_forward.
//  6. Unknown outcomes resolved at the same bank: with no lookup, by a
//     reversal advice (0420, 39 = 68) of that operation, repeated until
//     answered ([Endpoint.ReverseRecord], or [Endpoint.Reverse] by
//     reference); the payment may go to another bank only once the
//     reversal was acknowledged. A reversal of an operation the bank never
//     received is answered 00 and changes nothing. The router must not
//     read Find's not_supported as "nothing found". (Resending a 0100 or
//     0200 with its trace is safe too — the duplicate rule answers it with
//     the first answer — but the profile's way is the reversal.) A late
//     answer can still report an approval the bank made after its
//     reversal was acknowledged as "never received": OnLateAnswer is where
//     the integrator raises it for reconciliation.
//  7. 03 disables the gateway until a manager enables it, as a 401 does:
//     it is KindUnauthorized (Code invalid_merchant), whether it answers a
//     payment or the sign-on.
//  8. One Client per URL, opened at start ([Client.Open]) and closed at
//     shutdown ([Client.Close]); the gateway's config needs terminal_id
//     (8 characters, field 41) and merchant_id (field 42), and no API key.
//  9. Reconciliation by RRN: a settlement row's psp_reference is the RRN
//     of the message that settled — a sale's or an offline advice's own
//     (the Authorization.ID), a pre-authorization's completion (not the
//     0100's), a refund's (the Refund.ID) — and its merchant_reference
//     may be empty.
//
// # moov-io notes
//
// Spec87ASCII's bitmap is one 128-bit bitmap, always 32 hex characters,
// bit 1 never set: not the textbook primary bitmap with a secondary one
// announced by bit 1. The contract names this spec, so both ends follow
// it (TestWireFormat pins the bytes). Its fixed alphanumeric fields have
// no padder (a short value fails to pack), field 3 is Numeric (read back
// as "0"), and field 4's zero padding reads a zero amount back as "".
// The connection library's own request matching (Connection.Send) is not
// used: see the session type.
package iso8583
