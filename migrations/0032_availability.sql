-- What the SLO report needs and nothing else recorded: when each bank's
-- circuit breaker changed state, and when storepay itself started,
-- stopped cleanly or was found to have crashed. Written by slo.Recorder.
CREATE TABLE availability_events (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    source  TEXT NOT NULL CHECK (source IN ('gateway', 'storepay')),
    name    TEXT NOT NULL DEFAULT '', -- the bank, for source gateway
    -- gateway: closed | open | half_open
    -- storepay: start | stop | crash (at = the last moment it was seen alive)
    state   TEXT NOT NULL,
    detail  TEXT NOT NULL DEFAULT ''
);
CREATE INDEX availability_events_at ON availability_events (at);

-- The last moment a running storepay was seen alive, bumped every few
-- seconds: after a crash, the next start records the gap from here.
CREATE TABLE availability_alive (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    at  TEXT NOT NULL
);
