-- The forwarder picks due records per bank (its lane): those pinned to
-- that bank, and the unpinned ones for the preferred bank. Each is one
-- range of this index, so a busy or missing bank never holds the others
-- back, however long the queue.
DROP INDEX saf_due;
CREATE INDEX saf_due ON saf_records (status, gateway, next_attempt_at);
