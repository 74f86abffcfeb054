-- The payment machine (orders/machine.go, docs/payment-machine.md).
--
-- The lease: which storepay process (its incarnation id) is working on a
-- payment's pending operation, and until when. A live request holds it
-- while it calls the bank, and the resolver takes only what nobody holds,
-- so one operation never runs twice at once, without an in-memory map.
ALTER TABLE payments ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
ALTER TABLE payments ADD COLUMN lease_until TEXT NOT NULL DEFAULT '';

-- Every transition names its event and the operations it moved between.
-- Rows from before read '' for all three.
ALTER TABLE payment_events ADD COLUMN event TEXT NOT NULL DEFAULT '';
ALTER TABLE payment_events ADD COLUMN from_op TEXT NOT NULL DEFAULT '';
ALTER TABLE payment_events ADD COLUMN to_op TEXT NOT NULL DEFAULT '';

-- A cancelled order's voids and refunds become the cancel operations,
-- which never end while the bank keeps the money: before, a void refused
-- (other than as settled) left the card charged for a cancelled order.
UPDATE payments SET pending_op = 'cancel_void'
    WHERE pending_op = 'void' AND order_id IN (SELECT id FROM orders WHERE status = 'cancelled');
UPDATE payments SET pending_op = 'cancel_refund'
    WHERE pending_op = 'refund' AND pending_op_key = ''
      AND order_id IN (SELECT id FROM orders WHERE status = 'cancelled');
