package saf

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"storepay/devices"
	"storepay/migrations"
	"storepay/orders"
)

// EStopState is the emergency stop of automated forwarding.
type EStopState string

// States: go forwards; pause finishes what is in flight and starts
// nothing new; stop also cancels what is in flight.
const (
	Go    EStopState = "go"
	Pause EStopState = "pause"
	Stop  EStopState = "stop"
)

// Valid reports whether s is one of the three states.
func (s EStopState) Valid() bool { return s == Go || s == Pause || s == Stop }

// EStop is the emergency stop's state and who set it.
type EStop struct {
	State  EStopState `json:"state"`
	Reason string     `json:"reason"`
	Actor  string     `json:"actor"`
	At     time.Time  `json:"at"`
}

// EStop reads the emergency stop from the database. Anything unreadable
// (a database error, an unknown value) is reported as stop, with the
// reason saying why.
func (q *Queue) EStop(ctx context.Context) EStop {
	var e EStop
	var at string
	err := q.DB.Read().QueryRowContext(ctx, `SELECT state, reason, actor, at FROM estop WHERE id = 1`).
		Scan(&e.State, &e.Reason, &e.Actor, &at)
	if err != nil {
		return EStop{State: Stop, Reason: "emergency stop unreadable: " + err.Error(), Actor: "storepay", At: q.now()}
	}
	if !e.State.Valid() {
		return EStop{State: Stop, Reason: fmt.Sprintf("emergency stop holds an unknown state %q", e.State), Actor: "storepay", At: q.now()}
	}
	e.At, _ = migrations.ParseTime(at)
	return e
}

// SetEStop changes the emergency stop, durably and in the audit log.
// Going to stop cancels the forwards in flight.
func (q *Queue) SetEStop(ctx context.Context, state EStopState, actor, reason string) (EStop, error) {
	if !state.Valid() {
		return EStop{}, &orders.Error{Kind: orders.KindBadRequest, Code: "invalid_request", Message: "state must be go, pause or stop"}
	}
	now := q.now()
	var prev string
	err := q.DB.Update(ctx, func(tx *sql.Tx) error {
		if err := tx.QueryRow(`SELECT state FROM estop WHERE id = 1`).Scan(&prev); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO estop (id, state, reason, actor, at) VALUES (1, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET state=excluded.state, reason=excluded.reason, actor=excluded.actor, at=excluded.at`,
			state, reason, actor, migrations.FormatTime(now)); err != nil {
			return err
		}
		return devices.Audit(tx, devices.Entry{At: now, Actor: actor, Action: "estop." + string(state), Target: "estop",
			Reason: reason, Detail: "from " + prev})
	})
	if err != nil {
		return EStop{}, fmt.Errorf("set emergency stop: %w", err)
	}
	q.log().WarnContext(ctx, "emergency stop changed", "state", state, "from", prev, "actor", actor, "reason", reason)
	q.forwarder().estopChanged(state)
	return EStop{State: state, Reason: reason, Actor: actor, At: now}, nil
}
