package reconcile

// LoadInParts makes LoadLedger read the payments table in n parts however
// small it is, until the returned function restores the defaults.
func LoadInParts(n int) (restore func()) {
	parts, rows := loadParts, minRowsPerPart
	loadParts, minRowsPerPart = func() int { return n }, 1
	return func() { loadParts, minRowsPerPart = parts, rows }
}
