package orders

import (
	"bytes"
	"context"
	"encoding/csv"
	"errors"
	"io"
	"strconv"
	"strings"
	"time"

	"storepay/gateway"
)

// The acquirer protocol can look up authorizations but not refunds. A
// refund whose answer was lost is heard again by repeating it under its
// key, unless the bank kept a failure (a 5xx) as the key's answer: then
// every repeat replays the failure, and only the bank's settlement
// report, published once its business day closes, tells that the refund
// was made. refundInReport reads the reports from the day the refund was
// asked to the last closed one.

// reportDays bounds how many days of reports are read for one refund:
// an operation can wait out a long outage of its bank.
const reportDays = 60

// refundInReport reports whether a bank's settlement reports, from the
// business date of since on, show a refund of amount for the payment,
// under reference (storepay's refund reference) or, for a bank that
// names refunds by payment, under the payment id. made counts the refunds
// of the same payment and amount storepay already knows were made: a row
// beyond them is the one looked for. complete says every report from
// since's day to yesterday was read: a refund asked before yesterday that
// none of them shows was not made.
//
// none says the bank has no reports to ask (ISO 8583 sends them as
// files): its RRN duplicate rule makes a repeat safe instead.
func (s *Service) refundInReport(ctx context.Context, bank, paymentID, reference string, amount int64, made int, since time.Time) (found, complete, none bool) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lookupBudget)
	defer cancel()
	byPayment := 0
	today := s.now().UTC().Truncate(24 * time.Hour)
	day := since.UTC().Truncate(24 * time.Hour)
	complete = true
	for i := 0; day.Before(today); i, day = i+1, day.AddDate(0, 0, 1) {
		if i == reportDays {
			complete = false
			break
		}
		rows, err := s.reportRows(ctx, bank, day.Format(time.DateOnly))
		if gateway.NoLookup(err) {
			return false, false, true
		}
		if err != nil {
			// A bank that does not answer, or a day it has not closed
			// yet: nothing more to read now.
			complete = false
			break
		}
		for _, r := range rows {
			switch {
			case r.gross != -amount:
			case r.reference == reference:
				return true, true, false
			case r.reference == paymentID:
				byPayment++
			}
		}
	}
	return byPayment > made, complete, false
}

// reportRows returns the refund rows of a bank's report of a closed day,
// read once: a closed day's report does not change.
func (s *Service) reportRows(ctx context.Context, bank, date string) ([]reportRow, error) {
	k := bank + "\x00" + date
	s.reportsMu.Lock()
	rows, ok := s.reports[k]
	s.reportsMu.Unlock()
	if ok {
		return rows, nil
	}
	raw, err := s.Bank.Settlement(ctx, bank, date)
	if err != nil {
		return nil, err
	}
	rows = refundRows(raw)
	s.reportsMu.Lock()
	if s.reports == nil || len(s.reports) > 1000 {
		s.reports = map[string][]reportRow{}
	}
	s.reports[k] = rows
	s.reportsMu.Unlock()
	return rows, nil
}

type reportRow struct {
	reference string
	gross     int64
}

// refundRows reads the Refunded rows of a settlement report
// (settlement-format.md): columns by name, unknown ones ignored, rows it
// cannot read skipped (reconciliation reports them; here they only fail
// to prove anything).
func refundRows(raw []byte) []reportRow {
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(raw, []byte("\ufeff"))))
	r.FieldsPerRecord = -1
	header, err := r.Read()
	if err != nil {
		return nil
	}
	col := map[string]int{}
	for i, h := range header {
		col[strings.TrimSpace(h)] = i
	}
	ref, okRef := col["merchant_reference"]
	typ, okType := col["type"]
	gross, okGross := col["gross_amount"]
	if !okRef || !okType || !okGross {
		return nil
	}
	var out []reportRow
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil || len(rec) <= max(ref, typ, gross) || !strings.EqualFold(strings.TrimSpace(rec[typ]), "Refunded") {
			continue
		}
		g, err := strconv.ParseInt(strings.TrimSpace(rec[gross]), 10, 64)
		if err != nil {
			continue
		}
		out = append(out, reportRow{reference: strings.TrimSpace(rec[ref]), gross: g})
	}
}

// refundsMade counts a payment's refunds of amount storepay knows were
// made.
func (s *Service) refundsMade(ctx context.Context, paymentID string, amount int64) int {
	var n int
	if err := s.DB.Read().QueryRowContext(ctx, `SELECT count(*) FROM refunds WHERE payment_id = ? AND amount = ? AND status = 'refunded'`,
		paymentID, amount).Scan(&n); err != nil {
		return 1 << 30 // unknown: no row of the report counts as this refund
	}
	return n
}

// unknownAt reports whether err leaves the outcome unknown at the bank.
func unknownAt(err error) bool {
	e := gateway.AsError(err)
	return e != nil && e.Kind == gateway.KindUnknown
}
