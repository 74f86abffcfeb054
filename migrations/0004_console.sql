-- The manager web console (web/console_session.go).
--
-- A console session is opened with a manager's bearer token and then
-- carried by a cookie. Only the SHA-256 of the session id is stored: a copy
-- of the database does not let anyone act as a manager. token_hash is the
-- devices.token_hash of the token that opened the session: a session is
-- valid only while its device still holds that token and the manager role,
-- so rotating a token (devices enroll again) ends every session it opened.
CREATE TABLE console_sessions (
    id_hash      TEXT PRIMARY KEY,
    device_id    TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    token_hash   TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    -- Bumped at most once a minute by requests a person made (not by the
    -- pages' own polling): the idle expiry.
    last_seen_at TEXT NOT NULL,
    -- The absolute expiry, fixed at login.
    expires_at   TEXT NOT NULL
);
CREATE INDEX console_sessions_device ON console_sessions (device_id);
CREATE INDEX console_sessions_expires ON console_sessions (expires_at);

-- The console's payment search pages newest first over every payment
-- (keyset on created_at, id); without this index each page would sort
-- the whole table.
CREATE INDEX payments_created ON payments (created_at, id);

-- The console's queue page filters by status and pages oldest first:
-- with this index a page is read in order instead of sorting every
-- record of that status.
CREATE INDEX saf_status_created ON saf_records (status, created_at, id, amount);
