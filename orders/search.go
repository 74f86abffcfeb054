package orders

import (
	"context"
	"strings"
	"time"
)

// SearchFilter selects payments for the manager console. Empty fields
// match everything.
type SearchFilter struct {
	PaymentID  string
	OrderID    string
	TerminalID string
	// Last4 is the card's last four digits: all the console ever asks for.
	Last4   string
	Status  Status
	Gateway string
	// From and To bound created_at: From <= created_at < To.
	From, To time.Time
	// BeforeAt and BeforeID continue a search after the last payment of
	// the previous page (keyset paging, so page 200 costs what page 1
	// costs): payments created before BeforeAt, or at BeforeAt with a
	// smaller id.
	BeforeAt time.Time
	BeforeID string
	// Limit is the page size: default 50, at most 500.
	Limit int
}

// Search lists payments newest first, one page at a time, for the manager
// console. more reports whether older payments match too; the next page
// starts after the last payment returned.
func (s *Service) Search(ctx context.Context, f SearchFilter) (ps []Payment, more bool, err error) {
	var where []string
	var args []any
	for _, c := range []struct{ col, val string }{
		{"id", f.PaymentID}, {"order_id", f.OrderID}, {"terminal_id", f.TerminalID},
		{"card_last4", f.Last4}, {"status", string(f.Status)}, {"gateway", f.Gateway},
	} {
		if c.val != "" {
			where = append(where, c.col+" = ?")
			args = append(args, c.val)
		}
	}
	if !f.From.IsZero() {
		where = append(where, "created_at >= ?")
		args = append(args, ts(f.From))
	}
	if !f.To.IsZero() {
		where = append(where, "created_at < ?")
		args = append(args, ts(f.To))
	}
	if !f.BeforeAt.IsZero() {
		where = append(where, "(created_at < ? OR (created_at = ? AND id < ?))")
		args = append(args, ts(f.BeforeAt), ts(f.BeforeAt), f.BeforeID)
	}
	q := ""
	if len(where) > 0 {
		q = "WHERE " + strings.Join(where, " AND ")
	}
	if f.Limit <= 0 {
		f.Limit = 50
	}
	f.Limit = min(f.Limit, 500)
	args = append(args, f.Limit+1)
	ps, err = queryPayments(s.DB.ReadAt(ctx), q+" ORDER BY created_at DESC, id DESC LIMIT ?", args...)
	if err != nil {
		return nil, false, err
	}
	if len(ps) > f.Limit {
		return ps[:f.Limit], true, nil
	}
	return ps, false, nil
}
