package web

import (
	"fmt"
	"net/http"

	"storepay/devices"
)

// UndoPolicy says who may undo a sale: void or refund a payment, or
// cancel an order (which voids or refunds its payments).
type UndoPolicy string

const (
	// UndoOwnTerminal, the default: a terminal undoes only what it took
	// (its own payments, its own orders); undoing another lane's sale
	// takes a manager's token (403 manager_required otherwise). A store
	// keeps refunds to the till that rang the sale, or to a manager who
	// signs for them, because a refund is money out of the drawer.
	UndoOwnTerminal UndoPolicy = "own_terminal"
	// UndoAnyTerminal lets any terminal undo any sale: a store where
	// every lane serves every customer (storepay's behaviour before the
	// policy existed).
	UndoAnyTerminal UndoPolicy = "any_terminal"
)

// Valid reports whether p is a policy storepay knows ("" is the default).
func (p UndoPolicy) Valid() bool {
	return p == "" || p == UndoOwnTerminal || p == UndoAnyTerminal
}

// mayUndo refuses, under UndoOwnTerminal, a terminal that undoes a sale
// another device took (taken lists the devices that took it).
func (s *Server) mayUndo(r *http.Request, what string, taken ...string) error {
	d := info(r).Device
	if s.undo == UndoAnyTerminal || d.Role == devices.RoleManager {
		return nil
	}
	for _, t := range taken {
		if t != d.Name {
			return problem(http.StatusForbidden, "manager_required",
				fmt.Sprintf("%s was taken at %s; undoing it from another terminal needs a manager's token", what, t))
		}
	}
	return nil
}
