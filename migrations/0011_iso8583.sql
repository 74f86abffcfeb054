-- ISO 8583 gateways (gateway/iso8583, iso8583-profile.md).
--
-- The STAN counter of each terminal_id: advanced and committed before a
-- STAN is used, so a restart never hands out one whose message may still
-- be unanswered.
CREATE TABLE iso_stan (
    terminal_id TEXT PRIMARY KEY,
    last        INTEGER NOT NULL
);

-- Each bank operation's trace (STAN, RRN, transmission time), written
-- ahead before its first message is sent, and reused by every repeat of
-- the operation (0221, 0421, a resent 0100/0200): the RRN is this
-- protocol's idempotency key. key is the operation's key (orders/keys.go).
CREATE TABLE iso_traces (
    gateway    TEXT NOT NULL,
    key        TEXT NOT NULL,
    stan       INTEGER NOT NULL,
    rrn        TEXT NOT NULL,
    sent_at    TEXT NOT NULL,
    created_at TEXT NOT NULL,
    PRIMARY KEY (gateway, key)
);

-- What a later message needs of an operation (field 90's original, the
-- auth code, the card sealed under the store's key: every financial
-- message of the profile carries field 2), kept while a completion, a
-- refund or a reversal may follow, and purged after (iso8583.RecordTTL).
CREATE TABLE iso_records (
    gateway    TEXT NOT NULL,
    id         TEXT NOT NULL,  -- the RRN
    reference  TEXT NOT NULL DEFAULT '',
    record     BLOB NOT NULL,  -- JSON of iso8583.Record
    updated_at TEXT NOT NULL,
    PRIMARY KEY (gateway, id)
);
CREATE INDEX iso_records_updated ON iso_records (updated_at);
