package hq

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	_ "modernc.org/sqlite"

	"storepay/migrations"
)

// hubSchema is headquarters' own database: the chain view. It is rebuilt
// from the stores' streams if lost (a new durable consumer reads each
// stream from its start, within the stores' retention).
const hubSchema = `
CREATE TABLE IF NOT EXISTS tokens (
    name        TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS stores (
    store_id       TEXT PRIMARY KEY,
    last_event_at  TEXT NOT NULL DEFAULT '',
    last_seq       INTEGER NOT NULL DEFAULT 0,
    events         INTEGER NOT NULL DEFAULT 0,
    estop_state    TEXT NOT NULL DEFAULT 'go',
    estop_reason   TEXT NOT NULL DEFAULT '',
    estop_actor    TEXT NOT NULL DEFAULT '',
    estop_at       TEXT NOT NULL DEFAULT '',
    estop_seq      INTEGER NOT NULL DEFAULT 0
);
-- Every event once: the id is the store's outbox event id.
CREATE TABLE IF NOT EXISTS events (
    id        TEXT PRIMARY KEY,
    store_id  TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    type      TEXT NOT NULL,
    at        TEXT NOT NULL,
    body      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_store ON events (store_id, seq);
CREATE TABLE IF NOT EXISTS payments (
    store_id TEXT NOT NULL, id TEXT NOT NULL, status TEXT NOT NULL, method TEXT NOT NULL DEFAULT '',
    mode TEXT NOT NULL DEFAULT '', gateway TEXT NOT NULL DEFAULT '', amount INTEGER NOT NULL,
    tip_amount INTEGER NOT NULL DEFAULT 0, captured_amount INTEGER NOT NULL DEFAULT 0,
    refunded_amount INTEGER NOT NULL DEFAULT 0, currency TEXT NOT NULL, card_brand TEXT NOT NULL DEFAULT '',
    card_last4 TEXT NOT NULL DEFAULT '', decline_code TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL DEFAULT '', updated_at TEXT NOT NULL DEFAULT '',
    seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (store_id, id)
);
CREATE TABLE IF NOT EXISTS saf (
    store_id TEXT NOT NULL, id TEXT NOT NULL, payment_id TEXT NOT NULL, status TEXT NOT NULL,
    gateway TEXT NOT NULL DEFAULT '', amount INTEGER NOT NULL, currency TEXT NOT NULL,
    card_last4 TEXT NOT NULL DEFAULT '', decline_code TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL DEFAULT '', updated_at TEXT NOT NULL DEFAULT '',
    seq INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (store_id, id)
);
CREATE INDEX IF NOT EXISTS saf_status ON saf (status, store_id);
CREATE TABLE IF NOT EXISTS gateways (
    store_id TEXT NOT NULL, name TEXT NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    at TEXT NOT NULL DEFAULT '', PRIMARY KEY (store_id, name)
);
CREATE TABLE IF NOT EXISTS reconciliations (
    store_id TEXT NOT NULL, date TEXT NOT NULL, run_id INTEGER NOT NULL, status TEXT NOT NULL,
    summary TEXT NOT NULL DEFAULT '{}', finished_at TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (store_id, date)
);
CREATE TABLE IF NOT EXISTS devices (
    store_id TEXT NOT NULL, id TEXT NOT NULL, name TEXT NOT NULL, role TEXT NOT NULL, state TEXT NOT NULL,
    at TEXT NOT NULL DEFAULT '', PRIMARY KEY (store_id, id)
);
CREATE TABLE IF NOT EXISTS commands (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, target TEXT NOT NULL, body TEXT NOT NULL,
    actor TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS command_results (
    command_id TEXT NOT NULL, store_id TEXT NOT NULL, result TEXT NOT NULL, applied_at TEXT NOT NULL,
    PRIMARY KEY (command_id, store_id)
);
`

// OpenHubDB opens (creating) headquarters' database: WAL, synchronous
// FULL, one writer at a time.
func OpenHubDB(ctx context.Context, path string) (*sql.DB, error) {
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "synchronous(FULL)", "busy_timeout(10000)", "foreign_keys(ON)"} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.SetMaxOpenConns(4)
	if _, err := db.ExecContext(ctx, hubSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("open %s: schema: %w", path, err)
	}
	// Columns added after a hub database was first made.
	var n int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info('stores') WHERE name = 'saf_max_age_seconds'`).Scan(&n); err == nil && n == 0 {
		_, err = db.ExecContext(ctx, `ALTER TABLE stores ADD COLUMN saf_max_age_seconds INTEGER NOT NULL DEFAULT 259200`)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("open %s: schema: %w", path, err)
		}
	}
	return db, nil
}

func hashToken(tok string) string {
	s := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(s[:])
}

// Enroll makes a bearer token for headquarters' API under name; only its
// hash is kept.
func Enroll(ctx context.Context, db *sql.DB, name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 64 {
		return "", errors.New("name must be 1 to 64 characters")
	}
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	tok := "hq_" + hex.EncodeToString(b)
	_, err := db.ExecContext(ctx, `INSERT INTO tokens (name, token_hash, created_at) VALUES (?, ?, ?)`,
		name, hashToken(tok), migrations.FormatTime(time.Now()))
	if err != nil {
		if strings.Contains(err.Error(), "UNIQUE") {
			return "", fmt.Errorf("a token named %q exists already", name)
		}
		return "", fmt.Errorf("enroll %q: %w", name, err)
	}
	return tok, nil
}

// tokenName returns the name of the token tok, or "" if none.
func tokenName(ctx context.Context, db *sql.DB, tok string) (string, error) {
	var name string
	err := db.QueryRowContext(ctx, `SELECT name FROM tokens WHERE token_hash = ?`, hashToken(tok)).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return name, err
}
