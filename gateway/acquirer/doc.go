// Package acquirer is storepay's HTTP client of the acquirer-json protocol
// (see the contract in acquirer-protocol.md): one [Client] per URL of a
// bank, satisfying [gateway.Endpoint].
//
// Data flows one way: the router hands a bank-neutral request
// ([gateway.AuthRequest], [gateway.CaptureRequest], ...) to a Client, which
// encodes it as deterministic JSON (the same request always gives the same
// bytes, so a retry with the same Idempotency-Key is byte-identical), sends
// it with the request's Key as Idempotency-Key and the API key as a bearer
// token, and decodes the bank's answer back into gateway types.
//
// Its real job is the failure path. Every failed call comes back as a
// *[gateway.Error] whose Kind says what the failure proves, following the
// protocol's outcome table:
//
//	200                                  success (an unreadable 200 is KindUnknown)
//	400, 404, 422                        KindRejected, Code from the error body
//	401                                  KindUnauthorized
//	429                                  KindRateLimited, RetryAfter from Retry-After
//	503 not_processed                    KindNotProcessed
//	409, other 5xx, anything else        KindUnknown
//	reset or timeout after sending       KindUnknown
//	refused, DNS or TLS failure,         KindNotSent
//	deadline before anything was written
//
// Whether the request was written is learnt from net/http/httptrace: as
// soon as the transport has written any header of the request, a failure is
// KindUnknown. When in doubt the answer is KindUnknown, the safe side: only
// a KindUnknown failure forbids sending the payment to another bank.
//
// Request bodies are never put in an error or a log, so a card number
// cannot leak through one; answers are read with a size limit, and text
// the bank puts in its error messages is stripped of anything that looks
// like a card number.
package acquirer
