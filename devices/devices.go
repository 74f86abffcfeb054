// Package devices enrolls the store's devices (terminals and managers) and
// authenticates their bearer tokens.
//
// A token is 32 random bytes, printed once at enrollment. Only its SHA-256
// hash is stored: a copy of the database does not let anyone act as a
// device. (A slow password hash is not needed: the token has 256 bits of
// entropy, nothing to brute-force.)
package devices

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/google/uuid"

	"storepay/migrations"
)

// Role is what a device may do.
type Role string

// Roles.
const (
	// RoleTerminal takes orders and payments (the terminal API).
	RoleTerminal Role = "terminal"
	// RoleManager may also use the manager API and the console.
	RoleManager Role = "manager"
)

// Device is an enrolled device. Its Name is the terminal_id recorded on
// every payment it takes.
type Device struct {
	ID        string
	Name      string
	Role      Role
	CreatedAt time.Time
}

// ErrUnknownToken is returned by Authenticate for a token that no device
// holds.
var ErrUnknownToken = errors.New("unknown token")

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// tokenPrefix makes storepay tokens recognisable in a secret scanner.
const tokenPrefix = "sp_"

// Registry stores devices in the database.
type Registry struct {
	DB  *migrations.DB
	Now func() time.Time

	seenMu sync.Mutex
	seen   map[string]seenMark // device id: its last last-seen write
}

func (r *Registry) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Origin is who enrolls a device and from where, for the audit log.
type Origin struct {
	// Actor is who: "cli" for the command line (as its revoke), "demo".
	Actor string
	// From is where, in words: "user alice on host till-server".
	From string
}

// Enroll is EnrollFrom for callers inside storepay's own programs (the
// simulator, tests), audited with the actor "storepay".
func (r *Registry) Enroll(ctx context.Context, name string, role Role) (string, error) {
	return r.EnrollFrom(ctx, name, role, Origin{Actor: "storepay"})
}

// EnrollFrom registers a device and returns its bearer token. Enrolling a
// name that exists replaces that device's token (and role), revoked or
// not: the old token stops working, which is how a lost or leaked token is
// rotated. Every enrolment is audited ("device.enroll": who, which device,
// from where, and whether it was new, a rotation, a role change or a
// revoked device let in again) in the same transaction: a token that
// opens the store never appears without a record of it.
func (r *Registry) EnrollFrom(ctx context.Context, name string, role Role, by Origin) (string, error) {
	if !nameRE.MatchString(name) {
		return "", fmt.Errorf("enroll: name %q: use 1 to 64 letters, digits, '.', '_' or '-'", name)
	}
	if role != RoleTerminal && role != RoleManager {
		return "", fmt.Errorf("enroll: role %q: must be terminal or manager", role)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("enroll: %w", err)
	}
	token := tokenPrefix + base64.RawURLEncoding.EncodeToString(raw)
	now := r.now()
	err := r.DB.Update(ctx, func(tx *sql.Tx) error {
		var oldRole, revoked string
		err := tx.QueryRow(`SELECT role, revoked_at FROM devices WHERE name = ?`, name).Scan(&oldRole, &revoked)
		existed := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO devices (id, name, role, token_hash, created_at) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET role = excluded.role, token_hash = excluded.token_hash, revoked_at = ''`,
			"dev_"+uuid.NewString(), name, string(role), hash(token), migrations.FormatTime(now)); err != nil {
			return err
		}
		detail := "new " + string(role)
		switch {
		case existed && revoked != "":
			if t, err := migrations.ParseTime(revoked); err == nil {
				revoked = t.UTC().Format(time.RFC3339)
			}
			detail = string(role) + " enrolled again after its revocation (" + revoked + "): a new token"
		case existed && oldRole != string(role):
			detail = "a new token, and the role " + oldRole + " → " + string(role) + "; the old token is refused"
		case existed:
			detail = "a new token for the " + string(role) + "; the old token is refused"
		}
		if by.From != "" {
			detail += "; from " + by.From
		}
		return Audit(tx, Entry{At: now, Actor: by.Actor, Action: "device.enroll", Target: name, Detail: detail})
	})
	if err != nil {
		return "", fmt.Errorf("enroll %s: %w", name, err)
	}
	return token, nil
}

// Authenticate returns the device that holds token, or ErrUnknownToken.
func (r *Registry) Authenticate(ctx context.Context, token string) (Device, error) {
	if token == "" {
		return Device{}, ErrUnknownToken
	}
	var d Device
	var created string
	err := r.DB.Read().QueryRowContext(ctx, `SELECT id, name, role, created_at FROM devices WHERE token_hash = ? AND revoked_at = ''`, hash(token)).
		Scan(&d.ID, &d.Name, &d.Role, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return Device{}, ErrUnknownToken
	}
	if err != nil {
		return Device{}, fmt.Errorf("authenticate: %w", err)
	}
	d.CreatedAt, _ = migrations.ParseTime(created)
	return d, nil
}

// List returns every enrolled device, by name.
func (r *Registry) List(ctx context.Context) ([]Device, error) {
	rows, err := r.DB.Read().QueryContext(ctx, `SELECT id, name, role, created_at FROM devices ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	var out []Device
	for rows.Next() {
		var d Device
		var created string
		if err := rows.Scan(&d.ID, &d.Name, &d.Role, &created); err != nil {
			return nil, fmt.Errorf("list devices: %w", err)
		}
		d.CreatedAt, _ = migrations.ParseTime(created)
		out = append(out, d)
	}
	return out, rows.Err()
}

func hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}
