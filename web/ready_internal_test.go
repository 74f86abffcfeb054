package web

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestUnready(t *testing.T) {
	now := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
	plenty := uint64(1 << 30)
	for _, c := range []struct {
		name      string
		probe     error
		lastFault time.Time
		free      uint64
		want      string // "" ready, else a word of the reason
	}{
		{"healthy", nil, time.Time{}, plenty, ""},
		{"probe write failed", errors.New("disk I/O error"), time.Time{}, plenty, "does not take writes"},
		{"a sale refused just now", nil, now.Add(-time.Second), plenty, "refused a write"},
		{"a sale refused long ago", nil, now.Add(-faultHold), plenty, ""},
		{"disk full, small writes still fit", nil, time.Time{}, minFreeBytes - 1, "disk is full"},
		{"just enough room", nil, time.Time{}, minFreeBytes, ""},
	} {
		got := unready(c.probe, c.lastFault, now, c.free)
		if (c.want == "") != (got == "") || !strings.Contains(got, c.want) {
			t.Errorf("%s: unready = %q, want %q", c.name, got, c.want)
		}
	}
}
