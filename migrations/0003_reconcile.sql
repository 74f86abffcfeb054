-- Nightly reconciliation (package reconcile): the store's ledger against
-- every bank's settlement report, one business date at a time.

-- One execution of the batch. A run's items are written in small
-- transactions (the writer serves the tills too); the run becomes the
-- date's result only when reconciliations points at it, in one
-- transaction, so a reader never sees half a run and a re-run replaces the
-- previous one whole.
CREATE TABLE reconciliation_runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    date         TEXT NOT NULL,            -- business date, YYYY-MM-DD (UTC)
    status       TEXT NOT NULL,            -- matched | discrepancies
    summary      TEXT NOT NULL,            -- JSON, reconcile.Summary
    problems     TEXT NOT NULL DEFAULT '[]', -- JSON, malformed rows with their lines
    items        INTEGER NOT NULL DEFAULT 0,
    started_at   TEXT NOT NULL,
    finished_at  TEXT NOT NULL
);
CREATE INDEX reconciliation_runs_date ON reconciliation_runs (date);

-- The current (last completed) run of each business date.
CREATE TABLE reconciliations (
    date    TEXT PRIMARY KEY,
    run_id  INTEGER NOT NULL UNIQUE REFERENCES reconciliation_runs (id)
);

-- Every line of a run's report: each settlement row and each store record
-- of the date, with the category it landed in. Amounts are signed minor
-- units in the bank's convention (refunds negative).
--
-- id is run_id << 32 | seq: a run's items are one range of the rowid, in
-- report order, appended at the end of the table. A night writes a million
-- of them; no secondary index slows that down (a night asks which other
-- run settled a few records by reading its neighbours' items once,
-- reconcile/lookup.go). The store record an item settles is refund_id
-- when set, else payment_id.
CREATE TABLE reconciliation_items (
    id                 INTEGER PRIMARY KEY,
    category           TEXT NOT NULL,
    gateway            TEXT NOT NULL,
    kind               TEXT NOT NULL,      -- capture | refund | chargeback | sale
    payment_id         TEXT NOT NULL DEFAULT '',
    refund_id          TEXT NOT NULL DEFAULT '',
    psp_reference      TEXT NOT NULL DEFAULT '',
    merchant_reference TEXT NOT NULL DEFAULT '',
    currency           TEXT NOT NULL DEFAULT '',
    bank_currency      TEXT NOT NULL DEFAULT '',
    store_amount       INTEGER NOT NULL DEFAULT 0,
    bank_amount        INTEGER NOT NULL DEFAULT 0,
    store_date         TEXT NOT NULL DEFAULT '',
    line               INTEGER NOT NULL DEFAULT 0, -- line in the bank's file
    detail             TEXT NOT NULL DEFAULT ''    -- empty for matched items: Last writes it from the dates
);

-- What reconciliation proposes for each discrepancy. It never performs
-- anything: a manager accepts or rejects a proposal in the console. Keyed
-- by the date and the item, so that a re-run keeps a manager's decision.
CREATE TABLE reconciliation_proposals (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    date         TEXT NOT NULL,
    item_key     TEXT NOT NULL,
    store_ref    TEXT NOT NULL DEFAULT '',
    category     TEXT NOT NULL,
    gateway      TEXT NOT NULL,
    payment_id   TEXT NOT NULL DEFAULT '',
    psp_reference TEXT NOT NULL DEFAULT '',
    action       TEXT NOT NULL,
    description  TEXT NOT NULL,
    amount       INTEGER NOT NULL DEFAULT 0,
    currency     TEXT NOT NULL DEFAULT '',
    status       TEXT NOT NULL CHECK (status IN ('proposed', 'accepted', 'rejected', 'withdrawn')),
    note         TEXT NOT NULL DEFAULT '',
    decided_by   TEXT NOT NULL DEFAULT '',
    decided_at   TEXT NOT NULL DEFAULT '',
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    UNIQUE (date, item_key)
);
CREATE INDEX reconciliation_proposals_store_ref ON reconciliation_proposals (store_ref) WHERE store_ref <> '';
