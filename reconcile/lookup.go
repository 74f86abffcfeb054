package reconcile

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// history answers "which other run settled this store record already?",
// from the current runs of other dates. On a store's first night, or in a
// fresh database, there is no other run and nothing is queried.
type history struct {
	date string
	stmt *sql.Stmt
}

// settledCategories are the categories in which a row settled a store
// record (the record is accounted for, whatever the amounts).
const settledCategories = `'matched','amount_mismatch','currency_mismatch'`

func newHistory(ctx context.Context, tx *sql.Tx, date string) (*history, error) {
	var others bool
	if err := tx.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM reconciliations WHERE date <> ?)`, date).Scan(&others); err != nil {
		return nil, fmt.Errorf("read earlier runs: %w", err)
	}
	if !others {
		return &history{date: date}, nil
	}
	stmt, err := tx.PrepareContext(ctx, `SELECT c.date, i.psp_reference
		FROM reconciliation_items i JOIN reconciliations c ON c.run_id = i.run_id
		WHERE i.store_ref = ? AND c.date <> ? AND i.category IN (`+settledCategories+`)
		ORDER BY c.date LIMIT 1`)
	if err != nil {
		return nil, fmt.Errorf("read earlier runs: %w", err)
	}
	return &history{date: date, stmt: stmt}, nil
}

func (h *history) close() {
	if h.stmt != nil {
		h.stmt.Close()
	}
}

// settled finds the run of another date that settled store record ref.
func (h *history) settled(ctx context.Context, ref string) (earlier, bool, error) {
	if h.stmt == nil {
		return earlier{}, false, nil
	}
	var e earlier
	err := h.stmt.QueryRowContext(ctx, ref, h.date).Scan(&e.date, &e.psp)
	if errors.Is(err, sql.ErrNoRows) {
		return earlier{}, false, nil
	}
	if err != nil {
		return earlier{}, false, fmt.Errorf("read earlier runs: %w", err)
	}
	return e, true, nil
}

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
		bank := Money(abs(r.Gross), r.Currency)
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
				it.Detail = fmt.Sprintf("%s refunded %s under %s (reference %s), which the store has no record of.",
					r.gateway, bank, r.PSPReference, orUnknown(r.MerchantReference))
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
	head := fmt.Sprintf("%s settled %s for %s", r.gateway, Money(r.Gross, r.Currency), r.MerchantReference)
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
	head := fmt.Sprintf("%s refunded %s for refund %s", r.gateway, Money(-r.Gross, r.Currency), r.MerchantReference)
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
