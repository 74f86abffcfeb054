-- Headquarters outbox (package hq). Every change headquarters should know
-- is written here by a trigger, in the same transaction as the change, so
-- an event can neither be lost nor describe a change that rolled back.
-- The relay copies rows to the store's embedded JetStream stream (with
-- Nats-Msg-Id = id) and deletes them once the stream has them.
--
-- The triggers fire only while hq_enabled holds its row: storepay writes
-- it at start when the config has an hq block and deletes it otherwise,
-- so a store without headquarters pays one indexed lookup per write and
-- keeps no outbox.
CREATE TABLE hq_enabled (
    id  INTEGER PRIMARY KEY CHECK (id = 1)
);

CREATE TABLE hq_outbox (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    id    TEXT NOT NULL UNIQUE DEFAULT (lower(hex(randomblob(16)))),
    type  TEXT NOT NULL,   -- payment | saf | estop | gateway | reconciliation | device | command | status
    body  TEXT NOT NULL,   -- JSON; never more of a card than brand and last four
    at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE TRIGGER hq_payment_insert AFTER INSERT ON payments
WHEN EXISTS (SELECT 1 FROM hq_enabled)
BEGIN
    INSERT INTO hq_outbox (type, body) VALUES ('payment', json_object(
        'id', NEW.id, 'order_id', NEW.order_id, 'method', NEW.method, 'status', NEW.status,
        'mode', NEW.mode, 'gateway', NEW.gateway, 'amount', NEW.amount, 'tip_amount', NEW.tip_amount,
        'captured_amount', NEW.captured_amount, 'refunded_amount', NEW.refunded_amount,
        'currency', NEW.currency, 'card_brand', NEW.card_brand, 'card_last4', NEW.card_last4,
        'decline_code', NEW.decline_code, 'created_at', NEW.created_at, 'updated_at', NEW.updated_at));
END;

CREATE TRIGGER hq_payment_update AFTER UPDATE OF status, gateway, captured_amount, refunded_amount, amount, tip_amount ON payments
WHEN EXISTS (SELECT 1 FROM hq_enabled)
 AND (OLD.status IS NOT NEW.status OR OLD.gateway IS NOT NEW.gateway OR OLD.captured_amount IS NOT NEW.captured_amount
      OR OLD.refunded_amount IS NOT NEW.refunded_amount OR OLD.amount IS NOT NEW.amount OR OLD.tip_amount IS NOT NEW.tip_amount)
BEGIN
    INSERT INTO hq_outbox (type, body) VALUES ('payment', json_object(
        'id', NEW.id, 'order_id', NEW.order_id, 'method', NEW.method, 'status', NEW.status,
        'mode', NEW.mode, 'gateway', NEW.gateway, 'amount', NEW.amount, 'tip_amount', NEW.tip_amount,
        'captured_amount', NEW.captured_amount, 'refunded_amount', NEW.refunded_amount,
        'currency', NEW.currency, 'card_brand', NEW.card_brand, 'card_last4', NEW.card_last4,
        'decline_code', NEW.decline_code, 'created_at', NEW.created_at, 'updated_at', NEW.updated_at));
END;

CREATE TRIGGER hq_saf_insert AFTER INSERT ON saf_records
WHEN EXISTS (SELECT 1 FROM hq_enabled)
BEGIN
    INSERT INTO hq_outbox (type, body) VALUES ('saf', json_object(
        'id', NEW.id, 'payment_id', NEW.payment_id, 'gateway', NEW.gateway, 'amount', NEW.amount,
        'currency', NEW.currency, 'status', NEW.status, 'card_last4', NEW.card_last4,
        'attempts', NEW.attempts, 'decline_code', NEW.decline_code,
        'created_at', NEW.created_at, 'updated_at', NEW.updated_at));
END;

CREATE TRIGGER hq_saf_update AFTER UPDATE OF status, gateway ON saf_records
WHEN EXISTS (SELECT 1 FROM hq_enabled) AND (OLD.status IS NOT NEW.status OR OLD.gateway IS NOT NEW.gateway)
BEGIN
    INSERT INTO hq_outbox (type, body) VALUES ('saf', json_object(
        'id', NEW.id, 'payment_id', NEW.payment_id, 'gateway', NEW.gateway, 'amount', NEW.amount,
        'currency', NEW.currency, 'status', NEW.status, 'card_last4', NEW.card_last4,
        'attempts', NEW.attempts, 'decline_code', NEW.decline_code,
        'created_at', NEW.created_at, 'updated_at', NEW.updated_at));
END;

CREATE TRIGGER hq_estop_update AFTER UPDATE ON estop
WHEN EXISTS (SELECT 1 FROM hq_enabled)
BEGIN
    INSERT INTO hq_outbox (type, body) VALUES ('estop', json_object(
        'state', NEW.state, 'reason', NEW.reason, 'actor', NEW.actor, 'at', NEW.at));
END;

CREATE TRIGGER hq_estop_insert AFTER INSERT ON estop
WHEN EXISTS (SELECT 1 FROM hq_enabled)
BEGIN
    INSERT INTO hq_outbox (type, body) VALUES ('estop', json_object(
        'state', NEW.state, 'reason', NEW.reason, 'actor', NEW.actor, 'at', NEW.at));
END;

CREATE TRIGGER hq_gateway_disable AFTER INSERT ON gateway_disabled
WHEN EXISTS (SELECT 1 FROM hq_enabled)
BEGIN
    INSERT INTO hq_outbox (type, body) VALUES ('gateway', json_object(
        'name', NEW.name, 'state', 'disabled', 'reason', NEW.reason, 'actor', NEW.actor, 'at', NEW.at));
END;

CREATE TRIGGER hq_gateway_enable AFTER DELETE ON gateway_disabled
WHEN EXISTS (SELECT 1 FROM hq_enabled)
BEGIN
    INSERT INTO hq_outbox (type, body) VALUES ('gateway', json_object(
        'name', OLD.name, 'state', 'enabled'));
END;

CREATE TRIGGER hq_reconciliation AFTER INSERT ON reconciliations
WHEN EXISTS (SELECT 1 FROM hq_enabled)
BEGIN
    INSERT INTO hq_outbox (type, body) SELECT 'reconciliation', json_object(
        'date', r.date, 'run_id', r.id, 'status', r.status, 'summary', json(r.summary), 'finished_at', r.finished_at)
    FROM reconciliation_runs r WHERE r.id = NEW.run_id;
END;

CREATE TRIGGER hq_reconciliation_rerun AFTER UPDATE OF run_id ON reconciliations
WHEN EXISTS (SELECT 1 FROM hq_enabled)
BEGIN
    INSERT INTO hq_outbox (type, body) SELECT 'reconciliation', json_object(
        'date', r.date, 'run_id', r.id, 'status', r.status, 'summary', json(r.summary), 'finished_at', r.finished_at)
    FROM reconciliation_runs r WHERE r.id = NEW.run_id;
END;

CREATE TRIGGER hq_device_enrol AFTER INSERT ON devices
WHEN EXISTS (SELECT 1 FROM hq_enabled)
BEGIN
    INSERT INTO hq_outbox (type, body) VALUES ('device', json_object(
        'id', NEW.id, 'name', NEW.name, 'role', NEW.role, 'state', 'enrolled', 'at', NEW.created_at));
END;

CREATE TRIGGER hq_device_revoke AFTER DELETE ON devices
WHEN EXISTS (SELECT 1 FROM hq_enabled)
BEGIN
    INSERT INTO hq_outbox (type, body) VALUES ('device', json_object(
        'id', OLD.id, 'name', OLD.name, 'role', OLD.role, 'state', 'revoked',
        'at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now')));
END;
