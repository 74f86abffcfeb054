package iso8583

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"
)

// STAN is a systems trace audit number (field 11): 1 to 999999, unique per
// terminal_id among the messages not yet answered. It is sent as 6 digits.
type STAN uint32

// MaxSTAN is the largest STAN; the counter wraps to 1 after it.
const MaxSTAN STAN = 999999

// String returns the STAN as field 11 carries it: 6 digits.
func (s STAN) String() string { return fmt.Sprintf("%06d", uint32(s)) }

// Valid reports whether s is 1 to 999999.
func (s STAN) Valid() bool { return s >= 1 && s <= MaxSTAN }

// ParseSTAN reads field 11.
func ParseSTAN(s string) (STAN, error) {
	if !isDigits(s, 6) {
		return 0, fmt.Errorf("iso8583: STAN %q is not 6 digits", s)
	}
	n, _ := strconv.Atoi(s)
	if n == 0 {
		return 0, fmt.Errorf("iso8583: STAN 000000")
	}
	return STAN(n), nil
}

// STANAllocator hands out the STANs of one terminal_id. The client takes
// the STANs of its network messages (sign-on, echo) from it; the caller
// takes those of its bank operations from the same allocator, so that the
// two never collide.
//
// storepay's implementation must be durable: a STAN handed out before a
// restart must not come back while its message could still be unanswered
// (a counter committed to the database, advanced before use).
type STANAllocator interface {
	// NextSTAN returns the next STAN. An error means none could be
	// allocated; nothing is sent.
	NextSTAN(ctx context.Context) (STAN, error)
}

// MemorySTANs is an in-memory STANAllocator for tests and tools: it
// counts from 1 and wraps after 999999, and forgets everything on a
// restart. Its zero value is ready to use.
type MemorySTANs struct {
	mu   sync.Mutex
	last STAN
}

// NextSTAN returns the next STAN.
func (m *MemorySTANs) NextSTAN(context.Context) (STAN, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last++
	if m.last > MaxSTAN {
		m.last = 1
	}
	return m.last, nil
}

// MakeRRN returns a retrieval reference number in the usual form YDDDhh
// plus the STAN: the last digit of the year, the day of the year and the
// hour (UTC) of t, then the 6 digits of stan. It is unique per terminal as
// long as fewer than a million STANs are used in an hour; storepay may
// choose its RRNs any other way (12 characters at most).
func MakeRRN(t time.Time, stan STAN) string {
	t = t.UTC()
	return fmt.Sprintf("%d%03d%02d%s", t.Year()%10, t.YearDay(), t.Hour(), stan)
}
