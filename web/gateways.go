package web

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"slices"

	"storepay/devices"
	"storepay/gateway"
	"storepay/migrations"
)

// setGateway takes a bank out of service or back in, for a manager: the
// decision is stored and audited in one transaction before the router
// acts on it, so that a restart keeps it.
func (s *Server) setGateway(r *http.Request, name string, enable bool, reason string) error {
	if !slices.Contains(s.router.Banks(), name) {
		return problem(http.StatusNotFound, "gateway_not_found", "no such gateway")
	}
	action := "gateway.disable"
	if enable {
		action = "gateway.enable"
	}
	now, actor := s.now(), info(r).Device.Name
	err := s.db.Update(r.Context(), func(tx *sql.Tx) error {
		var err error
		if enable {
			_, err = tx.Exec(`DELETE FROM gateway_disabled WHERE name = ?`, name)
		} else {
			_, err = tx.Exec(`INSERT INTO gateway_disabled (name, reason, actor, at) VALUES (?,?,?,?)
				ON CONFLICT (name) DO UPDATE SET reason = excluded.reason, actor = excluded.actor, at = excluded.at`,
				name, reason, actor, migrations.FormatTime(now))
		}
		if err != nil {
			return err
		}
		return devices.Audit(tx, devices.Entry{At: now, Actor: actor, Action: action, Target: name, Reason: reason})
	})
	if err != nil {
		return err
	}
	if enable {
		return s.router.Enable(r.Context(), name)
	}
	return s.router.Disable(r.Context(), name)
}

// RestoreDisabledGateways disables again, at start, the banks a manager
// took out of service.
func RestoreDisabledGateways(ctx context.Context, db *migrations.DB, router *gateway.Router) error {
	rows, err := db.Read().QueryContext(ctx, `SELECT name FROM gateway_disabled`)
	if err != nil {
		return fmt.Errorf("read disabled gateways: %w", err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return fmt.Errorf("read disabled gateways: %w", err)
		}
		names = append(names, name)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read disabled gateways: %w", err)
	}
	for _, name := range names {
		if slices.Contains(router.Banks(), name) {
			if err := router.Disable(ctx, name); err != nil {
				return err
			}
		}
	}
	return nil
}
