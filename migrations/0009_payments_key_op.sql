-- The operation the request under pending_op_key started (authorize,
-- capture, void, refund). The key stays after the operation finished, so
-- that its repeat is answered with the result; a request under that key
-- for another operation is then told apart and refused as a reused key.
-- Rows from before read '' and are told apart by the payment's status.
ALTER TABLE payments ADD COLUMN key_op TEXT NOT NULL DEFAULT '';
