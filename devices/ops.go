package devices

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"storepay/migrations"
)

// Errors of the device operations; the web layer maps each to a problem.
var (
	// ErrNotFound: no device has that name.
	ErrNotFound = errors.New("no such device")
	// ErrNameTaken: another device already has the new name.
	ErrNameTaken = errors.New("device name taken")
	// ErrRevoked: the device is revoked (it cannot be renamed; enroll
	// the name again to give it a new token).
	ErrRevoked = errors.New("device revoked")
	// ErrInvalid: a name, interval or peripheral report is malformed; the
	// error's text says which.
	ErrInvalid = errors.New("invalid")
)

// Health is what the store should believe of a device now.
type Health string

// Healths. A terminal that reports errors still "appears to process"
// (the store's failure analysis): degraded, not offline.
const (
	HealthOK       Health = "ok"       // heartbeats on time, every peripheral ok
	HealthDegraded Health = "degraded" // heartbeats on time, a peripheral reports an error
	HealthOffline  Health = "offline"  // no heartbeat for two intervals
	HealthUnknown  Health = "unknown"  // never sent a heartbeat (managers, older terminals)
	HealthRevoked  Health = "revoked"
)

// Healths lists every Health, for metrics that report zeros too.
var Healths = []Health{HealthOK, HealthDegraded, HealthOffline, HealthUnknown, HealthRevoked}

// Peripheral kinds a terminal reports on.
var PeripheralKinds = []string{"pin_pad", "printer", "cash_drawer"}

// Peripheral is what a heartbeat said of one peripheral.
type Peripheral struct {
	Kind       string    `json:"kind"`
	Status     string    `json:"status"` // ok or error
	Detail     string    `json:"detail,omitempty"`
	ReportedAt time.Time `json:"reported_at"`
}

// Status is a device as a manager sees it. Its token is never shown.
type Status struct {
	Name              string        `json:"name"`
	Role              Role          `json:"role"`
	CreatedAt         time.Time     `json:"created_at"`
	RevokedAt         *time.Time    `json:"revoked_at"`
	LastSeenAt        *time.Time    `json:"last_seen_at"`
	LastSeenAddress   string        `json:"last_seen_address,omitempty"`
	HeartbeatAt       *time.Time    `json:"heartbeat_at"`
	HeartbeatInterval time.Duration `json:"-"`
	IntervalSeconds   int64         `json:"heartbeat_interval_seconds,omitempty"`
	Health            Health        `json:"health"`
	Peripherals       []Peripheral  `json:"peripherals"`
	id                string
}

// HealthAt is the device's health at now: offline once silent for two of
// its own intervals.
func (s Status) HealthAt(now time.Time) Health {
	switch {
	case s.RevokedAt != nil:
		return HealthRevoked
	case s.HeartbeatAt == nil || s.HeartbeatInterval <= 0:
		return HealthUnknown
	case now.Sub(*s.HeartbeatAt) > 2*s.HeartbeatInterval:
		return HealthOffline
	}
	for _, p := range s.Peripherals {
		if p.Status != "ok" {
			return HealthDegraded
		}
	}
	return HealthOK
}

const statusCols = `id, name, role, created_at, revoked_at, last_seen_at, last_seen_addr, heartbeat_at, heartbeat_interval_ms`

// Statuses returns every device (revoked ones included), by name, with
// its health at the registry's clock.
func (r *Registry) Statuses(ctx context.Context) ([]Status, error) {
	return r.query(ctx, ``)
}

// Get returns the device named name, or ErrNotFound.
func (r *Registry) Get(ctx context.Context, name string) (Status, error) {
	out, err := r.query(ctx, ` WHERE name = ?`, name)
	if err != nil {
		return Status{}, err
	}
	if len(out) == 0 {
		return Status{}, fmt.Errorf("device %q: %w", name, ErrNotFound)
	}
	return out[0], nil
}

func (r *Registry) query(ctx context.Context, where string, args ...any) ([]Status, error) {
	db := r.DB.Read()
	rows, err := db.QueryContext(ctx, `SELECT `+statusCols+` FROM devices`+where+` ORDER BY name`, args...)
	if err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	defer rows.Close()
	var out []Status
	byID := map[string]int{}
	for rows.Next() {
		var s Status
		var created, revoked, seen, beat string
		var ms int64
		if err := rows.Scan(&s.id, &s.Name, &s.Role, &created, &revoked, &seen, &s.LastSeenAddress, &beat, &ms); err != nil {
			return nil, fmt.Errorf("list devices: %w", err)
		}
		s.CreatedAt, _ = migrations.ParseTime(created)
		s.RevokedAt, s.LastSeenAt, s.HeartbeatAt = optTime(revoked), optTime(seen), optTime(beat)
		s.HeartbeatInterval = time.Duration(ms) * time.Millisecond
		s.IntervalSeconds = ms / 1000
		s.Peripherals = []Peripheral{}
		byID[s.id] = len(out)
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list devices: %w", err)
	}
	rows.Close()
	prows, err := db.QueryContext(ctx, `SELECT device_id, kind, status, detail, reported_at FROM device_peripherals ORDER BY device_id, kind`)
	if err != nil {
		return nil, fmt.Errorf("list peripherals: %w", err)
	}
	defer prows.Close()
	for prows.Next() {
		var id, at string
		var p Peripheral
		if err := prows.Scan(&id, &p.Kind, &p.Status, &p.Detail, &at); err != nil {
			return nil, fmt.Errorf("list peripherals: %w", err)
		}
		p.ReportedAt, _ = migrations.ParseTime(at)
		if i, ok := byID[id]; ok {
			out[i].Peripherals = append(out[i].Peripherals, p)
		}
	}
	now := r.now()
	for i := range out {
		out[i].Health = out[i].HealthAt(now)
	}
	return out, prows.Err()
}

func optTime(s string) *time.Time {
	if s == "" {
		return nil
	}
	t, err := migrations.ParseTime(s)
	if err != nil {
		return nil
	}
	return &t
}

// Summary counts devices by health, every Health present.
func (r *Registry) Summary(ctx context.Context) (map[Health]int, error) {
	all, err := r.Statuses(ctx)
	if err != nil {
		return nil, err
	}
	out := map[Health]int{}
	for _, h := range Healths {
		out[h] = 0
	}
	for _, s := range all {
		out[s.Health]++
	}
	return out, nil
}

// Revoke stops the device's token at once, and with it every console
// session opened with it, and records who did it and why in the audit
// log, in the same transaction. The device keeps its name (it is on its
// payments); enrolling the name again gives it a new token. Revoking a
// revoked device is ErrRevoked, changing nothing.
func (r *Registry) Revoke(ctx context.Context, name, actor, reason string) (Status, error) {
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return Status{}, fmt.Errorf("revoke: %w", err)
	}
	now := r.now()
	err := r.DB.Update(ctx, func(tx *sql.Tx) error {
		var id, revoked string
		if err := tx.QueryRow(`SELECT id, revoked_at FROM devices WHERE name = ?`, name).Scan(&id, &revoked); errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("device %q: %w", name, ErrNotFound)
		} else if err != nil {
			return err
		}
		if revoked != "" {
			return fmt.Errorf("device %q: %w", name, ErrRevoked)
		}
		// No SHA-256 is written with a "revoked:" prefix: no token matches.
		if _, err := tx.Exec(`UPDATE devices SET token_hash = ?, revoked_at = ? WHERE id = ?`,
			"revoked:"+hex.EncodeToString(nonce), migrations.FormatTime(now), id); err != nil {
			return err
		}
		if _, err := tx.Exec(`DELETE FROM console_sessions WHERE device_id = ?`, id); err != nil {
			return err
		}
		return Audit(tx, Entry{At: now, Actor: actor, Action: "device.revoke", Target: name, Reason: reason})
	})
	if err != nil {
		return Status{}, fmt.Errorf("revoke %s: %w", name, err)
	}
	r.forget(name)
	return r.Get(ctx, name)
}

// Rename gives a device a new name: the terminal_id of the payments it
// takes from now on (its past payments keep the name they were taken
// under). Audited with both names.
func (r *Registry) Rename(ctx context.Context, name, newName, actor, reason string) (Status, error) {
	if !nameRE.MatchString(newName) {
		return Status{}, fmt.Errorf("name %q: use 1 to 64 letters, digits, '.', '_' or '-': %w", newName, ErrInvalid)
	}
	now := r.now()
	err := r.DB.Update(ctx, func(tx *sql.Tx) error {
		var id, revoked string
		if err := tx.QueryRow(`SELECT id, revoked_at FROM devices WHERE name = ?`, name).Scan(&id, &revoked); errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("device %q: %w", name, ErrNotFound)
		} else if err != nil {
			return err
		}
		if revoked != "" {
			return fmt.Errorf("device %q: %w", name, ErrRevoked)
		}
		var n int
		if err := tx.QueryRow(`SELECT count(*) FROM devices WHERE name = ?`, newName).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("device %q: %w", newName, ErrNameTaken)
		}
		if _, err := tx.Exec(`UPDATE devices SET name = ? WHERE id = ?`, newName, id); err != nil {
			return err
		}
		return Audit(tx, Entry{At: now, Actor: actor, Action: "device.rename", Target: newName, Reason: reason,
			Detail: "renamed from " + name})
	})
	if err != nil {
		return Status{}, fmt.Errorf("rename %s: %w", name, err)
	}
	r.forget(name)
	return r.Get(ctx, newName)
}

// seenEvery spaces the last-seen writes of one device: a terminal's every
// request must not become a database write.
const seenEvery = time.Minute

type seenMark struct {
	at   time.Time
	addr string
}

// Seen records that d made an authenticated request from addr: written
// when the last write is older than a minute or the address changed.
func (r *Registry) Seen(ctx context.Context, d Device, addr string) error {
	now := r.now()
	r.seenMu.Lock()
	if r.seen == nil {
		r.seen = map[string]seenMark{}
	}
	m, ok := r.seen[d.ID]
	if ok && m.addr == addr && now.Sub(m.at) < seenEvery {
		r.seenMu.Unlock()
		return nil
	}
	r.seen[d.ID] = seenMark{at: now, addr: addr}
	r.seenMu.Unlock()
	err := r.DB.Update(ctx, func(tx *sql.Tx) error {
		_, err := tx.Exec(`UPDATE devices SET last_seen_at = ?, last_seen_addr = ? WHERE id = ?`, migrations.FormatTime(now), addr, d.ID)
		return err
	})
	if err != nil {
		r.forgetID(d.ID)
		return fmt.Errorf("device %s last seen: %w", d.Name, err)
	}
	return nil
}

func (r *Registry) forget(string) {
	r.seenMu.Lock()
	r.seen = nil
	r.seenMu.Unlock()
}

func (r *Registry) forgetID(id string) {
	r.seenMu.Lock()
	delete(r.seen, id)
	r.seenMu.Unlock()
}

// Heartbeat bounds.
const (
	MinHeartbeat = 5 * time.Second
	MaxHeartbeat = time.Hour
	maxDetail    = 200
)

// Heartbeat records a device's heartbeat: the interval it promises until
// the next one and what it says of its peripherals (each kind at most
// once; a kind not reported keeps its last report). Bad input is
// ErrInvalid and changes nothing.
func (r *Registry) Heartbeat(ctx context.Context, d Device, interval time.Duration, ps []Peripheral) (Status, error) {
	if interval < MinHeartbeat || interval > MaxHeartbeat {
		return Status{}, fmt.Errorf("interval_seconds: out of range (%d to %d): %w", int(MinHeartbeat.Seconds()), int(MaxHeartbeat.Seconds()), ErrInvalid)
	}
	seen := map[string]bool{}
	for i, p := range ps {
		if !known(p.Kind) {
			return Status{}, fmt.Errorf("peripherals[%d].kind: must be one of %s: %w", i, strings.Join(PeripheralKinds, ", "), ErrInvalid)
		}
		if seen[p.Kind] {
			return Status{}, fmt.Errorf("peripherals[%d].kind: %s reported twice: %w", i, p.Kind, ErrInvalid)
		}
		seen[p.Kind] = true
		if p.Status != "ok" && p.Status != "error" {
			return Status{}, fmt.Errorf("peripherals[%d].status: must be ok or error: %w", i, ErrInvalid)
		}
		if len(p.Detail) > maxDetail {
			return Status{}, fmt.Errorf("peripherals[%d].detail: longer than %d bytes: %w", i, maxDetail, ErrInvalid)
		}
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i].Kind < ps[j].Kind })
	now := migrations.FormatTime(r.now())
	err := r.DB.Update(ctx, func(tx *sql.Tx) error {
		if _, err := tx.Exec(`UPDATE devices SET heartbeat_at = ?, heartbeat_interval_ms = ? WHERE id = ?`,
			now, interval.Milliseconds(), d.ID); err != nil {
			return err
		}
		for _, p := range ps {
			if _, err := tx.Exec(`INSERT INTO device_peripherals (device_id, kind, status, detail, reported_at) VALUES (?, ?, ?, ?, ?)
				ON CONFLICT (device_id, kind) DO UPDATE SET status = excluded.status, detail = excluded.detail, reported_at = excluded.reported_at`,
				d.ID, p.Kind, p.Status, p.Detail, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Status{}, fmt.Errorf("heartbeat of %s: %w", d.Name, err)
	}
	return r.Get(ctx, d.Name)
}

func known(kind string) bool {
	for _, k := range PeripheralKinds {
		if k == kind {
			return true
		}
	}
	return false
}

// LastSeen is LastSeenAt, or the zero time for a device never seen.
func (s Status) LastSeen() time.Time {
	if s.LastSeenAt == nil {
		return time.Time{}
	}
	return *s.LastSeenAt
}
