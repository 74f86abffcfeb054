package reconcile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"storepay/orders"
)

// settledByOtherRuns finds which of the store records refs the current
// runs of the two dates either side of date settled, and under which
// psp_reference. A record of D-1 may have been settled by the run of
// D-2 (a bank booking a sale made just after midnight on the day before)
// or of D-1; a record of D by the run of D-1 or D+1; and so on.
//
// It reads those runs' items once, keeping only the refs asked about: no
// index over every item ever reconciled is needed, which keeps the write
// of a million items fast. On a store's first night, or when nothing is
// asked, nothing is read.
func settledByOtherRuns(ctx context.Context, tx *sql.Tx, date string, refs map[string]bool) (map[string]earlier, error) {
	if len(refs) == 0 {
		return nil, nil
	}
	d, _ := time.Parse(time.DateOnly, date)
	rows, err := tx.QueryContext(ctx, `SELECT date, run_id FROM reconciliations WHERE date BETWEEN ? AND ? AND date <> ? ORDER BY date`,
		d.AddDate(0, 0, -2).Format(time.DateOnly), d.AddDate(0, 0, 2).Format(time.DateOnly), date)
	if err != nil {
		return nil, fmt.Errorf("read earlier runs: %w", err)
	}
	type run struct {
		date string
		id   int64
	}
	var runs []run
	for rows.Next() {
		var r run
		if err := rows.Scan(&r.date, &r.id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read earlier runs: %w", err)
		}
		runs = append(runs, r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read earlier runs: %w", err)
	}
	out := map[string]earlier{}
	for _, r := range runs {
		rows, err := tx.QueryContext(ctx, `SELECT CASE WHEN refund_id <> '' THEN refund_id ELSE payment_id END, psp_reference, row_hash
			FROM reconciliation_items WHERE id >= ? AND id < ? AND category IN (`+settledCategories+`)`, itemID(r.id, 0), itemID(r.id+1, 0))
		if err != nil {
			return nil, fmt.Errorf("read the run of %s: %w", r.date, err)
		}
		var ref, psp sql.RawBytes
		var hash int64
		for rows.Next() {
			if err := rows.Scan(&ref, &psp, &hash); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read the run of %s: %w", r.date, err)
			}
			if refs[string(ref)] {
				if _, seen := out[string(ref)]; !seen {
					out[string(ref)] = earlier{date: r.date, psp: string(psp), rowHash: uint64(hash)}
				}
			}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read the run of %s: %w", r.date, err)
		}
	}
	return out, nil
}

// settledCategories are the categories in which a row settled a store
// record (the record is accounted for, whatever the amounts).
const settledCategories = `'matched','amount_mismatch','currency_mismatch'`

// missingInStore turns the rows that settled no store record into items,
// saying what the store does know of their reference: a voided sale the
// bank charged anyway reads differently from a reference nobody knows.
func (m *matcher) missingInStore(ctx context.Context, tx *sql.Tx) error {
	if len(m.unmatched) == 0 {
		return nil
	}
	pay, err := tx.PrepareContext(ctx, `SELECT status, method, gateway, captured_at FROM payments WHERE id = ?`)
	if err != nil {
		return fmt.Errorf("look up payments: %w", err)
	}
	defer pay.Close()
	rfd, err := tx.PrepareContext(ctx, `SELECT r.status, r.payment_id, r.updated_at FROM refunds r WHERE r.id = ?`)
	if err != nil {
		return fmt.Errorf("look up refunds: %w", err)
	}
	defer rfd.Close()

	for _, r := range m.unmatched {
		it := Item{Category: MissingInStore, Gateway: r.gateway, PSPReference: r.PSPReference, BankAmount: r.Gross,
			Currency: r.Currency, Line: r.Line}
		bank := orders.FormatMoney(abs(r.Gross), r.Currency)
		var status string
		switch r.Type {
		case Chargeback:
			it.Kind, it.PaymentID = "chargeback", r.MerchantReference
			it.Detail = fmt.Sprintf("%s took back %s for %s (chargeback %s): the card holder disputed the payment.",
				r.gateway, bank, orUnknown(r.MerchantReference), r.PSPReference)
		case Refunded:
			it.Kind, it.MerchantReference = "refund", r.MerchantReference
			var paymentID, at string
			err := rfd.QueryRowContext(ctx, r.MerchantReference).Scan(&status, &paymentID, &at)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				// The reference may name the payment itself (the format
				// calls it storepay's payment id): say which payment.
				var payStatus, method, gw, capturedAt string
				switch perr := pay.QueryRowContext(ctx, r.MerchantReference).Scan(&payStatus, &method, &gw, &capturedAt); {
				case perr == nil:
					it.PaymentID, it.MerchantReference = r.MerchantReference, ""
					it.Detail = fmt.Sprintf("%s refunded %s of payment %s (%s in the store) under %s, a refund the store has no record of.",
						r.gateway, bank, r.MerchantReference, payStatus, r.PSPReference)
				case errors.Is(perr, sql.ErrNoRows):
					it.Detail = fmt.Sprintf("%s refunded %s under %s (reference %s), which the store has no record of.",
						r.gateway, bank, r.PSPReference, orUnknown(r.MerchantReference))
				default:
					return fmt.Errorf("look up payment %s: %w", r.MerchantReference, perr)
				}
			case err != nil:
				return fmt.Errorf("look up refund %s: %w", r.MerchantReference, err)
			default:
				it.PaymentID, it.RefundID, it.MerchantReference = paymentID, r.MerchantReference, ""
				it.Detail = storeRefundSays(r, status, at)
			}
		default:
			it.Kind, it.PaymentID = "capture", r.MerchantReference
			var method, gw, capturedAt string
			err := pay.QueryRowContext(ctx, r.MerchantReference).Scan(&status, &method, &gw, &capturedAt)
			switch {
			case errors.Is(err, sql.ErrNoRows):
				it.Detail = fmt.Sprintf("%s settled %s under %s (reference %s), which the store has no record of.",
					r.gateway, bank, r.PSPReference, orUnknown(r.MerchantReference))
			case err != nil:
				return fmt.Errorf("look up payment %s: %w", r.MerchantReference, err)
			default:
				it.Detail = storePaymentSays(r, status, method, gw, capturedAt)
			}
		}
		if r.otherGW != "" {
			it.Detail = fmt.Sprintf("%s settled %s for %s, which the store recorded at %s.", r.gateway, bank, orUnknown(r.MerchantReference), r.otherGW)
			status = ""
		}
		propose(&it, status)
		m.res.discrepancies = append(m.res.discrepancies, it)
	}
	return nil
}

func storePaymentSays(r bankRow, status, method, gw, capturedAt string) string {
	head := fmt.Sprintf("%s settled %s for %s", r.gateway, orders.FormatMoney(r.Gross, r.Currency), r.MerchantReference)
	switch {
	case method == "cash":
		return head + ", which the store recorded as a cash payment."
	case status == "voided" || status == "declined":
		return fmt.Sprintf("%s, which the store %s: the card holder was charged for a sale the store did not make.", head, status)
	case status == "pending":
		return head + ", whose outcome at the bank the store is still resolving."
	case status == "authorized":
		return head + ", which the store holds as authorized and never captured."
	case status == "stored":
		return head + ", which the store still holds for store-and-forward: forwarding it as well would charge the card twice."
	case status == "declined_after_forward":
		return head + ", which the store recorded as declined when it was forwarded."
	case gw != r.gateway && gw != "":
		return head + ", which the store recorded at " + gw + "."
	case len(capturedAt) >= 10:
		return fmt.Sprintf("%s, which the store captured on %s, more than a day away from this report.", head, capturedAt[:10])
	}
	return fmt.Sprintf("%s, which the store recorded as %s.", head, status)
}

func storeRefundSays(r bankRow, status, at string) string {
	head := fmt.Sprintf("%s refunded %s for refund %s", r.gateway, orders.FormatMoney(-r.Gross, r.Currency), r.MerchantReference)
	if status == "refunded" && len(at) >= 10 {
		return fmt.Sprintf("%s, which the store refunded on %s, more than a day away from this report.", head, at[:10])
	}
	return fmt.Sprintf("%s, which the store recorded as %s.", head, status)
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown reference"
	}
	return s
}
