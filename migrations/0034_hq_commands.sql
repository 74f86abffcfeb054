-- Commands from headquarters this store has applied: one row per command
-- id, written in the transaction that applies it, so a command redelivered
-- after a crash or a lost acknowledgement is recognised and not applied
-- twice. The trigger reports the result back through the outbox.
CREATE TABLE hq_commands (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    actor       TEXT NOT NULL,
    reason      TEXT NOT NULL DEFAULT '',
    result      TEXT NOT NULL,       -- applied | kept_local | rejected: ...
    applied_at  TEXT NOT NULL
);

CREATE TRIGGER hq_command_result AFTER INSERT ON hq_commands
WHEN EXISTS (SELECT 1 FROM hq_enabled)
BEGIN
    INSERT INTO hq_outbox (type, body) VALUES ('command', json_object(
        'id', NEW.id, 'kind', NEW.kind, 'result', NEW.result, 'applied_at', NEW.applied_at));
END;
