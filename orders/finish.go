package orders

import (
	"context"
	"database/sql"
	"strings"
)

// Finisher lets a caller commit, in the very transaction that commits an
// operation's outcome, what it will answer for it: the web layer writes
// the idempotency record this way, so that on the hot paths (an order, a
// cash payment, a payment decided offline) a request costs one durable
// write, and the outcome and its recorded answer can never disagree.
//
// result is the Order or Payment the operation returns.
type Finisher func(tx *sql.Tx, result any) error

type finisherKey struct{}

// WithFinisher returns a context whose operation calls f in its final
// write. Operations that end with an error, or without a write of their
// own, do not call it.
func WithFinisher(ctx context.Context, f Finisher) context.Context {
	return context.WithValue(ctx, finisherKey{}, f)
}

func finish(ctx context.Context, tx *sql.Tx, result any) error {
	if f, ok := ctx.Value(finisherKey{}).(Finisher); ok && f != nil {
		return f(tx, result)
	}
	return nil
}

// errReuse: an Idempotency-Key that made an order or payment comes back
// with another request (after a crash lost the stored answer).
var errReuse = &Error{Kind: KindInvalid, Code: "idempotency_key_reuse", Message: "this Idempotency-Key was used for a different request"}

// SameHashKey reports whether two request hashes were made under the same
// key, so that their difference means two different requests. A request
// hash is "h1.<key id>.<mac>" (see web); an erased one (""), or one made
// under another card key, cannot tell: the record it guards is compared
// with the request instead.
func SameHashKey(a, b string) bool {
	ka, ok1 := hashKeyID(a)
	kb, ok2 := hashKeyID(b)
	return ok1 && ok2 && ka == kb
}

func hashKeyID(h string) (string, bool) {
	rest, ok := strings.CutPrefix(h, "h1.")
	if !ok {
		return "", false
	}
	id, _, ok := strings.Cut(rest, ".")
	return id, ok
}
