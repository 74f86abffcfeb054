-- Banks a manager took out of service: a disable lasts until a manager
-- enables the bank again, restarts included. (A bank disabled by storepay
-- itself after a 401 is not here: a restart with a fixed API key is the
-- cure for that.)
CREATE TABLE gateway_disabled (
    name    TEXT PRIMARY KEY,
    reason  TEXT NOT NULL DEFAULT '',
    actor   TEXT NOT NULL,
    at      TEXT NOT NULL
);
