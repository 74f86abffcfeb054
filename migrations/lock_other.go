//go:build !unix || aix

package migrations

import (
	"errors"
	"os"
)

// tryLock has no flock(2) to stand on here: storepay refuses to run
// rather than let two processes write one database.
func tryLock(*os.File) (bool, error) {
	return false, errors.Join(errors.New("this platform has no flock(2)"), errors.ErrUnsupported)
}
