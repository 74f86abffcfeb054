//go:build linux

package gameday

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// diskNearlyFull caps the size of every file storepay writes
// (RLIMIT_FSIZE, set on the running process) at a little more than its
// database holds now: a write past it fails with EFBIG, which SQLite sees
// exactly as a full disk (Go ignores SIGXFSZ). off lifts the cap.
func diskNearlyFull(p *proc, dbPath string, on bool) error {
	lim := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	if on {
		var size int64
		for _, suffix := range []string{"", "-wal"} {
			if fi, err := os.Stat(dbPath + suffix); err == nil && fi.Size() > size {
				size = fi.Size()
			}
		}
		lim.Cur = uint64(size) + 64<<10
	}
	if err := unix.Prlimit(p.cmd.Process.Pid, unix.RLIMIT_FSIZE, &lim, nil); err != nil {
		return fmt.Errorf("disk nearly full: prlimit: %w", err)
	}
	return nil
}
