-- The hash of the bank's row that settled an item (every field of it).
-- A later night's report that carries a record another night settled is
-- compared with it: the very same row is a re-sent batch, any other (a
-- new batch, another amount) is the money taken a second time. Items of
-- runs made before this column read 0, and are compared by reference.
ALTER TABLE reconciliation_items ADD COLUMN row_hash INTEGER NOT NULL DEFAULT 0;
