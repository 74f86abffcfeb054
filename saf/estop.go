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
	e, _, err := q.SetEStopIf(ctx, state, actor, reason, nil)
	return e, err
}

// SetEStopIf is SetEStop for a caller that must decide, inside the same
// transaction, whether the change happens and record why (headquarters'
// commands: applied once, with their result, or not at all). decide sees
// the current stop; returning false leaves it as it is and still commits
// what decide wrote. A nil decide always applies.
func (q *Queue) SetEStopIf(ctx context.Context, state EStopState, actor, reason string, decide func(tx *sql.Tx, cur EStop) (bool, error)) (EStop, bool, error) {
	if !state.Valid() {
		return EStop{}, false, &orders.Error{Kind: orders.KindBadRequest, Code: "invalid_request", Message: "state must be go, pause or stop"}
	}
	now := q.now()
	var prev string
	applied := true
	err := q.DB.Update(ctx, func(tx *sql.Tx) error {
		var cur EStop
		var at string
		if err := tx.QueryRow(`SELECT state, reason, actor, at FROM estop WHERE id = 1`).Scan(&cur.State, &cur.Reason, &cur.Actor, &at); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		cur.At, _ = migrations.ParseTime(at)
		prev = string(cur.State)
		applied = true
		if decide != nil {
			ok, err := decide(tx, cur)
			if err != nil {
				return err
			}
			applied = ok
		}
		if !applied {
			return nil
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
		return EStop{}, false, fmt.Errorf("set emergency stop: %w", err)
	}
	if !applied {
		return q.EStop(ctx), false, nil
	}
	q.log().WarnContext(ctx, "emergency stop changed", "state", state, "from", prev, "actor", actor, "reason", reason)
	q.forwarder().estopChanged(state)
	return EStop{State: state, Reason: reason, Actor: actor, At: now}, true, nil
}
