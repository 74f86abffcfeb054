//go:build !linux

package gameday

import "errors"

// diskNearlyFull needs Linux's prlimit; elsewhere the incident fails and
// the report says so.
func diskNearlyFull(*proc, string, bool) error {
	return errors.New("disk_full needs Linux (RLIMIT_FSIZE set with prlimit)")
}
