//go:build unix

package migrations

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// freeBytes is the space an unprivileged writer may still use on the
// file system holding dir.
func freeBytes(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
