-- Every capture, void and refund a terminal's request started, by the
-- request's key (device and Idempotency-Key). A payment remembers only
-- the key of its last operation (pending_op_key); once a later operation
-- replaced it, and the stored answer was pruned after 72 hours, a repeat
-- of an earlier request is still found here: it makes nothing new, and is
-- answered with the payment (the contract: what a key made is still found
-- by its key). A request under such a key for another operation is a
-- reused key. A request that ended not done gives its key up.
--
-- Numbered 0020 to leave 0012 to 0019 to work in progress elsewhere:
-- migrations apply in version order and a gap is no harm.
CREATE TABLE operation_keys (
    op_key     TEXT PRIMARY KEY,
    payment_id TEXT NOT NULL REFERENCES payments (id),
    op         TEXT NOT NULL,
    amount     INTEGER NOT NULL DEFAULT 0,
    tip        INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
