-- Devices for real (devices/ops.go): revocation, last seen, heartbeats of
-- a terminal and its peripherals.
--
-- A revoked device keeps its row (its name is on its payments and in the
-- audit log); its token_hash is replaced by a value no token hashes to,
-- so the token and every console session opened with it (sessions join
-- on the device's token_hash) are refused at once.
ALTER TABLE devices ADD COLUMN revoked_at TEXT NOT NULL DEFAULT '';
-- The last authenticated request: when, and from which address. Written
-- at most once a minute per device (or when the address changes).
ALTER TABLE devices ADD COLUMN last_seen_at TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN last_seen_addr TEXT NOT NULL DEFAULT '';
-- The last heartbeat and the interval the device promised between them:
-- silent for two intervals, it is offline.
ALTER TABLE devices ADD COLUMN heartbeat_at TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN heartbeat_interval_ms INTEGER NOT NULL DEFAULT 0;

-- What the last heartbeat said of each peripheral.
CREATE TABLE device_peripherals (
    device_id   TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL CHECK (kind IN ('pin_pad', 'printer', 'cash_drawer')),
    status      TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    detail      TEXT NOT NULL DEFAULT '',
    reported_at TEXT NOT NULL,
    PRIMARY KEY (device_id, kind)
);
