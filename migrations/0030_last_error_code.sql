-- A payment's and a store-and-forward record's last error is kept as a
-- sentence a manager can act on (gateway.Explain) plus its stable code;
-- the raw error goes to the log only. Rows written before this keep
-- their text and an empty code.
ALTER TABLE payments ADD COLUMN last_error_code TEXT NOT NULL DEFAULT '';
ALTER TABLE saf_records ADD COLUMN last_error_code TEXT NOT NULL DEFAULT '';
