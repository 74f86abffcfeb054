-- Store-and-forward: card payments accepted without a bank's decision,
-- waiting to be forwarded. One record per payment; the downstream
-- idempotency key is the payment id, so a record can only ever produce
-- one charge at the bank it is pinned to.
CREATE TABLE saf_records (
    id              TEXT PRIMARY KEY,
    -- Deferred: an offline payment and its record are written in one
    -- transaction, the record first.
    payment_id      TEXT NOT NULL UNIQUE REFERENCES payments (id) DEFERRABLE INITIALLY DEFERRED,
    idem_key        TEXT NOT NULL,
    -- The bank that may hold the payment (its outcome there is unknown,
    -- or a forward to it is under way). Empty: any bank may take it.
    gateway         TEXT NOT NULL DEFAULT '',
    terminal_id     TEXT NOT NULL,
    amount          INTEGER NOT NULL, -- amount + tip, minor units
    currency        TEXT NOT NULL,
    capture         INTEGER NOT NULL,
    -- 1: send as a stored advice (stored: true). 0: the record holds an
    -- online authorization whose outcome is unknown; only the very same
    -- request (stored: false) may be repeated, or the bank would see the
    -- key reused with another body.
    advice          INTEGER NOT NULL DEFAULT 1,
    -- A manager replayed it: it is not expired again.
    expire_exempt   INTEGER NOT NULL DEFAULT 0,
    fingerprint     TEXT NOT NULL,
    card_last4      TEXT NOT NULL DEFAULT '',
    -- AES-256-GCM sealed card; NULL once forwarded, declined or written off.
    card_sealed     BLOB,
    status          TEXT NOT NULL CHECK (status IN ('queued', 'forwarding', 'held', 'forwarded', 'declined', 'expired')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT NOT NULL DEFAULT '',
    -- The last failure was the bank being unavailable (not this record's
    -- fault): retried at once when a bank comes back.
    last_unavailable INTEGER NOT NULL DEFAULT 0,
    bank_auth_id    TEXT NOT NULL DEFAULT '',
    decline_code    TEXT NOT NULL DEFAULT '',
    created_at      TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    forwarded_at    TEXT NOT NULL DEFAULT ''
);
CREATE INDEX saf_due ON saf_records (status, next_attempt_at);
CREATE INDEX saf_card ON saf_records (fingerprint, status);

-- What the queue holds and has not forwarded yet, kept in step with
-- saf_records in the same transactions, so that the total_limit check is
-- one row read instead of a sum over the queue.
CREATE TABLE saf_outstanding (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    count   INTEGER NOT NULL,
    amount  INTEGER NOT NULL
);
INSERT INTO saf_outstanding (id, count, amount) VALUES (1, 0, 0);

-- Every forwarding attempt, for the manager's record detail.
CREATE TABLE saf_attempts (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id   TEXT NOT NULL REFERENCES saf_records (id),
    at          TEXT NOT NULL,
    gateway     TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    duration_ms INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX saf_attempts_record ON saf_attempts (record_id, seq);

-- Cards refused offline: the configured hot list is matched separately;
-- these are cards a bank declined after they were accepted offline.
CREATE TABLE saf_blocked_cards (
    fingerprint TEXT PRIMARY KEY,
    reason      TEXT NOT NULL,
    at          TEXT NOT NULL
);

-- The emergency stop for automated forwarding: one row, and its history.
CREATE TABLE estop (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    state   TEXT NOT NULL,
    reason  TEXT NOT NULL,
    actor   TEXT NOT NULL,
    at      TEXT NOT NULL
);
INSERT INTO estop (id, state, reason, actor, at) VALUES (1, 'go', 'initial state', 'storepay', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));

-- Every manager action (and every automatic one, like the runaway guard):
-- who, when, what, why.
CREATE TABLE audit_log (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    target  TEXT NOT NULL DEFAULT '',
    reason  TEXT NOT NULL DEFAULT '',
    detail  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_log_at ON audit_log (at);
