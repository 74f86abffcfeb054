-- Devices: terminals and managers. Tokens are stored only as SHA-256
-- hashes; the token itself is printed once at enrollment.
CREATE TABLE devices (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL CHECK (role IN ('terminal', 'manager')),
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

-- Idempotency records of terminal POSTs, keyed by the calling device and
-- the Idempotency-Key: the answer as it was sent, written durably before
-- it is sent (on the hot paths in the same transaction as the outcome).
CREATE TABLE idempotency (
    device_id     TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status_code   INTEGER NOT NULL DEFAULT 0,
    content_type  TEXT NOT NULL DEFAULT '',
    location      TEXT NOT NULL DEFAULT '',
    body          BLOB,
    created_at    TEXT NOT NULL,
    PRIMARY KEY (device_id, key)
);
CREATE INDEX idempotency_created ON idempotency (created_at);

CREATE TABLE orders (
    id            TEXT PRIMARY KEY,
    status        TEXT NOT NULL,
    channel       TEXT NOT NULL,
    currency      TEXT NOT NULL,
    lines         TEXT NOT NULL, -- JSON array of lines as received
    total_amount  INTEGER NOT NULL,
    paid_amount   INTEGER NOT NULL DEFAULT 0,
    terminal_id   TEXT NOT NULL,
    op_key        TEXT UNIQUE,   -- device + Idempotency-Key that created it
    op_hash       TEXT NOT NULL DEFAULT '', -- hash of that request
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);

-- Payments. pending_op is the write-ahead record of a bank call in flight
-- (authorize, capture, void, refund, reverse): it is committed before the
-- bank is called and cleared in the same transaction as the outcome. On
-- start, every row with a pending_op is resolved.
CREATE TABLE payments (
    id               TEXT PRIMARY KEY,
    order_id         TEXT NOT NULL REFERENCES orders (id),
    method           TEXT NOT NULL CHECK (method IN ('card', 'cash')),
    status           TEXT NOT NULL,
    mode             TEXT NOT NULL,
    gateway          TEXT NOT NULL DEFAULT '',
    amount           INTEGER NOT NULL,
    tip_amount       INTEGER NOT NULL DEFAULT 0,
    authorized_amount INTEGER NOT NULL DEFAULT 0,
    captured_amount  INTEGER NOT NULL DEFAULT 0,
    captured_at      TEXT NOT NULL DEFAULT '', -- when the bank (or the till) took the money
    refunded_amount  INTEGER NOT NULL DEFAULT 0,
    currency         TEXT NOT NULL,
    capture          INTEGER NOT NULL,
    auth_code        TEXT NOT NULL DEFAULT '',
    decline_code     TEXT NOT NULL DEFAULT '',
    bank_auth_id     TEXT NOT NULL DEFAULT '',
    card_brand       TEXT NOT NULL DEFAULT '',
    card_bin         TEXT NOT NULL DEFAULT '', -- first six digits, for the hot list
    card_last4       TEXT NOT NULL DEFAULT '',
    card_fingerprint TEXT NOT NULL DEFAULT '',
    -- AES-256-GCM sealed card, held only while an authorization is
    -- unresolved (so that a same-key retry can resend the same request),
    -- erased in the transaction that records the outcome.
    card_sealed      BLOB,
    terminal_id      TEXT NOT NULL,
    op_key           TEXT UNIQUE,
    op_hash          TEXT NOT NULL DEFAULT '',
    pending_op       TEXT NOT NULL DEFAULT '',
    pending_amount   INTEGER NOT NULL DEFAULT 0,
    pending_tip      INTEGER NOT NULL DEFAULT 0,
    pending_key      TEXT NOT NULL DEFAULT '',
    pending_op_key   TEXT NOT NULL DEFAULT '', -- the request that started it
    pending_since    TEXT NOT NULL DEFAULT '',
    resolve_attempts INTEGER NOT NULL DEFAULT 0,
    resolve_after    TEXT NOT NULL DEFAULT '',
    last_error       TEXT NOT NULL DEFAULT '',
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL
);
CREATE INDEX payments_order ON payments (order_id);
CREATE INDEX payments_terminal ON payments (terminal_id, created_at);
CREATE INDEX payments_pending ON payments (pending_op) WHERE pending_op <> '';

CREATE TABLE refunds (
    id            TEXT PRIMARY KEY,
    payment_id    TEXT NOT NULL REFERENCES payments (id),
    amount        INTEGER NOT NULL,
    status        TEXT NOT NULL, -- pending, refunded, failed
    bank_refund_id TEXT NOT NULL DEFAULT '',
    op_key        TEXT UNIQUE,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE INDEX refunds_payment ON refunds (payment_id);

-- Every payment status change, written in the same transaction as the
-- change itself.
CREATE TABLE payment_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    payment_id  TEXT NOT NULL REFERENCES payments (id),
    from_status TEXT NOT NULL,
    to_status   TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '',
    at          TEXT NOT NULL
);
CREATE INDEX payment_events_payment ON payment_events (payment_id, seq);

-- A row that readiness checks rewrite to prove the database takes writes.
CREATE TABLE heartbeat (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    at  TEXT NOT NULL
);
