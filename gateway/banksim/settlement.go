package banksim

import (
	"bytes"
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// settlementHeader is the column order of the reports banksim writes.
var settlementHeader = []string{
	"batch_number", "merchant_id", "psp_reference", "merchant_reference", "type",
	"booking_date", "currency", "gross_amount", "fee_amount", "net_amount",
	"card_last4", "auth_code",
}

type settlementRow struct {
	merchant, psp, reference, kind string
	booked                         time.Time
	currency                       string
	gross, fee                     int64
	last4, authCode                string
}

func (r settlementRow) record(batch string) []string {
	return []string{
		batch, r.merchant, r.psp, r.reference, r.kind,
		r.booked.UTC().Format(time.RFC3339), r.currency,
		strconv.FormatInt(r.gross, 10), strconv.FormatInt(r.fee, 10), strconv.FormatInt(r.gross+r.fee, 10),
		r.last4, r.authCode,
	}
}

// CloseDay closes the business date day (YYYY-MM-DD) now: its report
// becomes available and later bookings go into the next open date.
func (s *Sim) CloseDay(day string) error {
	if _, err := time.Parse(time.DateOnly, day); err != nil {
		return fmt.Errorf("banksim: close day: %q is not YYYY-MM-DD", day)
	}
	s.book.mu.Lock()
	s.book.closed[day] = true
	s.book.mu.Unlock()
	s.log.Info("banksim closed business date", "date", day)
	return nil
}

// AddSettlementRows appends raw CSV rows, verbatim, to the report of
// business date day, for every account: the way to put a double charge,
// an amount mismatch, another merchant's row, a re-sent duplicate or a
// malformed line into a report. A header row is not needed.
func (s *Sim) AddSettlementRows(day string, rows []byte) error {
	if _, err := time.Parse(time.DateOnly, day); err != nil {
		return fmt.Errorf("banksim: settlement rows: %q is not YYYY-MM-DD", day)
	}
	if len(bytes.TrimSpace(rows)) == 0 {
		return errors.New("banksim: settlement rows: no rows")
	}
	if !bytes.HasSuffix(rows, []byte("\n")) {
		rows = append(rows, '\n')
	}
	s.book.mu.Lock()
	s.book.extra[day] = append(s.book.extra[day], rows...)
	s.book.mu.Unlock()
	s.log.Info("banksim added settlement rows", "date", day, "bytes", len(rows))
	return nil
}

// Settlement returns the report of business date day for the account of
// apiKey ("" means Config.APIKey), as GET /v1/settlements/{date} serves
// it. It reports false while the day is not closed.
func (s *Sim) Settlement(apiKey, day string) ([]byte, bool) {
	if apiKey == "" {
		apiKey = s.cfg.APIKey
	}
	return s.report(apiKey, day)
}

// report builds the CSV report of day for one account: a Settled row per
// capture booked on that date (the authorization not reversed), a Refunded
// row per refund, a Fee row per currency when DailyFee is set, then the
// extra rows added through the admin API.
func (s *Sim) report(apiKey, day string) ([]byte, bool) {
	now := s.now()
	s.book.mu.Lock()
	defer s.book.mu.Unlock()
	if !s.book.isClosedLocked(day, now) {
		return nil, false
	}

	var rows []settlementRow
	last4 := map[string]string{}
	for _, a := range s.book.order {
		last4[a.ID] = a.CardLast4
		if a.apiKey != apiKey || a.BusinessDate != day || a.CapturedAmount <= 0 || a.Status != statusApproved {
			continue
		}
		psp := a.ID
		if a.CaptureRRN != "" {
			psp = a.CaptureRRN // ISO 8583: the RRN of the capturing message
		}
		rows = append(rows, settlementRow{
			merchant: a.MerchantID, psp: psp, reference: a.Reference, kind: "Settled",
			booked: a.CapturedAt, currency: a.Currency,
			gross: a.CapturedAmount, fee: s.cfg.Fee(a.CapturedAmount),
			last4: a.CardLast4, authCode: a.AuthCode,
		})
	}
	for _, r := range s.book.refunds {
		if r.apiKey != apiKey || r.BusinessDate != day || !r.ReversedAt.IsZero() {
			continue
		}
		auth := s.book.auths[r.AuthorizationID]
		ref := r.Reference
		if ref == "" {
			ref = auth.Reference
		}
		psp := r.ID
		if r.RRN != "" {
			psp = r.RRN
		}
		rows = append(rows, settlementRow{
			merchant: auth.MerchantID, psp: psp, reference: ref, kind: "Refunded",
			booked: r.CreatedAt, currency: r.Currency, gross: -r.Amount,
			last4: last4[r.AuthorizationID],
		})
	}
	slices.SortStableFunc(rows, func(a, b settlementRow) int {
		return cmp.Or(a.booked.Compare(b.booked), strings.Compare(a.psp, b.psp))
	})
	if s.cfg.DailyFee > 0 && len(rows) > 0 {
		rows = append(rows, s.feeRows(rows, day)...)
	}

	batch := strings.ReplaceAll(day, "-", "") + "-01"
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	_ = w.Write(settlementHeader)
	for _, r := range rows {
		_ = w.Write(r.record(batch))
	}
	w.Flush()
	buf.Write(s.book.extra[day])
	return buf.Bytes(), true
}

// feeRows is one Fee row per currency and merchant of the day's rows,
// booked at the end of the day.
func (s *Sim) feeRows(rows []settlementRow, day string) []settlementRow {
	type group struct{ merchant, currency string }
	var groups []group
	for _, r := range rows {
		if g := (group{r.merchant, r.currency}); !slices.Contains(groups, g) {
			groups = append(groups, g)
		}
	}
	end, _ := time.Parse(time.DateOnly, day)
	end = end.Add(24*time.Hour - time.Second)
	fees := make([]settlementRow, len(groups))
	for i, g := range groups {
		fees[i] = settlementRow{
			merchant: g.merchant, psp: fmt.Sprintf("fee_%s_%s_%s", strings.ReplaceAll(day, "-", ""), g.merchant, g.currency),
			kind: "Fee", booked: end, currency: g.currency, fee: -s.cfg.DailyFee,
		}
	}
	return fees
}
