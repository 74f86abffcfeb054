package main

import (
	"bytes"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"storepay/gateway/banksim"
)

// The checks, run once the store has settled: storepay's database, the
// banks' own ledgers and what the terminals heard must tell one story.
//
//   - No payment charged more than once, across all banks (net of
//     reversals).
//   - Every payment ends charged exactly as its final status says, and a
//     terminal told captured, authorized or stored ends so (or voided,
//     refunded or declined after forward by what came later).
//   - No charge at any bank that storepay does not know.
//   - Nothing owed to a bank once every fault was lifted and time passed
//     (heal checks the bound).
//   - Every order's paid amount is its live payments', a cancelled order
//     keeps no money, and a 200 to a cancel left it cancelled.
//   - No refund beyond what terminals asked (or a cancel returned); no
//     capture answered 200 without capturing (a capture's repeat answered
//     after a refund shows the payment refunded, captured before).
//   - Every repeat of a key got the first answer (within the 72 hours
//     keys are kept; after that, the same thing found again).

type dbPayment struct {
	id, orderID, method, status, pendingOp string
	amount, captured, refunded, authorized int64
}

type dbOrder struct {
	id, status  string
	total, paid int64
}

func (w *world) check(st *stats) []string {
	db := w.inc.db.Read()
	payments := map[string]*dbPayment{}
	rows, err := db.Query(`SELECT id, order_id, method, status, pending_op, amount, captured_amount, refunded_amount, authorized_amount FROM payments ORDER BY id`)
	if err != nil {
		return []string{"check: " + err.Error()}
	}
	var ids []string
	for rows.Next() {
		p := &dbPayment{}
		if err := rows.Scan(&p.id, &p.orderID, &p.method, &p.status, &p.pendingOp, &p.amount, &p.captured, &p.refunded, &p.authorized); err != nil {
			rows.Close()
			return []string{"check: " + err.Error()}
		}
		payments[p.id] = p
		ids = append(ids, p.id)
	}
	rows.Close()
	ordersByID := map[string]*dbOrder{}
	rows, err = db.Query(`SELECT id, status, total_amount, paid_amount FROM orders ORDER BY id`)
	if err != nil {
		return []string{"check: " + err.Error()}
	}
	for rows.Next() {
		o := &dbOrder{}
		if err := rows.Scan(&o.id, &o.status, &o.total, &o.paid); err != nil {
			rows.Close()
			return []string{"check: " + err.Error()}
		}
		ordersByID[o.id] = o
	}
	rows.Close()

	// The banks' view of each payment.
	type money struct {
		live       []banksim.Authorization
		captured   int64
		refunded   int64
		uncaptured int64
		banks      []string
	}
	// An ISO 8583 switch knows a payment by its operations' RRNs, which
	// storepay keeps with the gateway's records.
	byRRN := map[string]string{}
	if rows, err := db.Query(`SELECT id, reference FROM iso_records`); err == nil {
		for rows.Next() {
			var id, ref string
			if rows.Scan(&id, &ref) == nil {
				byRRN[id] = ref
			}
		}
		rows.Close()
	}
	atBanks := map[string]*money{}
	for _, b := range w.banks {
		l := b.sim.Ledger()
		live := map[string]string{} // authorization id → reference
		for _, a := range l.Authorizations {
			if a.Status != "approved" {
				continue
			}
			if a.Reference == "" && a.RRN != "" {
				a.Reference = byRRN[a.RRN]
				if a.Reference == "" {
					a.Reference = "rrn " + a.RRN
				}
			}
			m := atBanks[a.Reference]
			if m == nil {
				m = &money{}
				atBanks[a.Reference] = m
			}
			m.live = append(m.live, a)
			m.banks = append(m.banks, b.name)
			m.captured += a.CapturedAmount
			if a.CapturedAmount == 0 {
				m.uncaptured += a.Amount
			}
			live[a.ID] = a.Reference
		}
		for _, r := range l.Refunds {
			if ref, ok := live[r.AuthorizationID]; ok {
				atBanks[ref].refunded += r.Amount
			}
		}
		for ref := range atBanks {
			if payments[ref] == nil {
				w.violation(fmt.Sprintf("unexpected: %s holds an approval for %s, a payment storepay does not know", b.name, ref))
				st.unexpected++
			}
		}
	}

	for _, id := range ids {
		p := payments[id]
		m := atBanks[id]
		if m == nil {
			m = &money{}
		}
		net := m.captured - m.refunded
		switch {
		case p.pendingOp != "":
			w.violation(fmt.Sprintf("unresolved: payment %s still owes %s to its bank", id, p.pendingOp))
			continue
		case len(m.live) > 1:
			w.violation(fmt.Sprintf("duplicated: payment %s charged %d times (%s)", id, len(m.live), strings.Join(m.banks, ", ")))
			st.duplicated++
			continue
		}
		bad := ""
		switch p.status {
		case "captured", "partially_refunded", "refunded":
			if p.method == "cash" {
				if len(m.live) > 0 {
					bad = "a cash payment holds a card approval"
				}
				break
			}
			if len(m.live) != 1 || m.captured != p.captured || m.refunded != p.refunded {
				bad = fmt.Sprintf("storepay says %s %d captured %d refunded; the bank holds %d approvals, %d captured, %d refunded",
					p.status, p.captured, p.refunded, len(m.live), m.captured, m.refunded)
			}
		case "authorized":
			if len(m.live) != 1 || m.captured != 0 || m.uncaptured != p.authorized {
				bad = fmt.Sprintf("storepay says authorized %d; the bank holds %d approvals, %d captured, %d on hold",
					p.authorized, len(m.live), m.captured, m.uncaptured)
			}
		case "declined", "voided", "declined_after_forward":
			if net != 0 || m.uncaptured != 0 {
				bad = fmt.Sprintf("storepay says %s; the bank keeps %d captured and %d on hold", p.status, net, m.uncaptured)
			}
		default:
			bad = "left " + p.status + " once everything settled"
		}
		if bad != "" {
			w.violation(fmt.Sprintf("money: payment %s: %s", id, bad))
			if net > 0 || m.uncaptured > 0 {
				st.unexpected++
			} else {
				st.lost++
			}
		}
	}

	// Orders.
	live := map[string]bool{"authorized": true, "captured": true, "stored": true, "partially_refunded": true, "refunded": true}
	paid := map[string]int64{}
	for _, p := range payments {
		if live[p.status] {
			paid[p.orderID] += p.amount
		}
	}
	var oids []string
	for id := range ordersByID {
		oids = append(oids, id)
	}
	sort.Strings(oids)
	for _, id := range oids {
		o := ordersByID[id]
		if o.paid != paid[id] {
			w.violation(fmt.Sprintf("order %s: paid_amount %d, its live payments %d", id, o.paid, paid[id]))
		}
		if o.status == "cancelled" {
			for _, p := range payments {
				if p.orderID == id && p.status != "voided" && p.status != "declined" && p.status != "declined_after_forward" &&
					(p.status != "refunded" || p.refunded != p.captured) {
					w.violation(fmt.Sprintf("order %s is cancelled but its payment %s is %s (%d captured, %d refunded)", id, p.id, p.status, p.captured, p.refunded))
				}
			}
		}
	}
	for _, o := range w.history.orders {
		if o.cancelled && ordersByID[o.id] != nil && ordersByID[o.id].status != "cancelled" {
			w.violation(fmt.Sprintf("order %s: a cancel was answered 200, the order is %s", o.id, ordersByID[o.id].status))
		}
	}

	// What the terminals were told.
	accepted := map[string]bool{"captured": true, "authorized": true, "stored": true, "partially_refunded": true, "refunded": true}
	var pids []string
	for id := range w.history.payments {
		pids = append(pids, id)
	}
	sort.Strings(pids)
	for _, id := range pids {
		n := w.history.payments[id]
		st.payments++
		if !accepted[n.told] {
			continue
		}
		p := payments[id]
		cancelAsked := false
		for _, o := range w.history.orders {
			if o.id == n.orderID && o.cancelAsk {
				cancelAsked = true
			}
		}
		switch {
		case p == nil:
			w.violation(fmt.Sprintf("lost: a terminal was told payment %s is %s; storepay has no such payment", id, n.told))
			st.lost++
		case p.status == "declined" || p.status == "pending":
			w.violation(fmt.Sprintf("lost: a terminal was told payment %s is %s; it ended %s", id, n.told, p.status))
			st.lost++
		case p.status == "voided" && !n.voidAsk && !cancelAsked:
			w.violation(fmt.Sprintf("lost: payment %s, told %s, ended voided though nobody voided it", id, n.told))
			st.lost++
		case p.status == "declined_after_forward" && n.told != "stored":
			w.violation(fmt.Sprintf("lost: payment %s, told %s, ended declined_after_forward", id, n.told))
			st.lost++
		default:
			st.ok++
		}
		if p != nil && p.method == "card" {
			var asked int64
			for _, a := range n.refunds {
				asked += a
			}
			if m := atBanks[id]; m != nil && m.refunded > asked && !cancelAsked {
				w.violation(fmt.Sprintf("money: payment %s: the bank refunded %d; terminals asked %d", id, m.refunded, asked))
				st.unexpected++
			}
		}
	}
	// Payments no terminal heard of as accepted, accepted nonetheless: a
	// request whose answer was lost, recovered by the repeat or the
	// resolver.
	for _, id := range ids {
		if n := w.history.payments[id]; (n == nil || !accepted[n.told]) && live[payments[id].status] {
			st.recovered++
		}
	}

	// Idempotency.
	for _, ex := range w.history.exchanges {
		st.requests++
		if strings.HasSuffix(ex.path, "/capture") {
			for _, a := range ex.answers {
				// Captured, whatever came after it (a refund, a cancel's
				// refund): a repeat answered later shows the payment now.
				got := answer{body: a.body}
				if a.status == http.StatusOK && (got.num("captured_amount") == 0 || got.str("captured_at") == "") {
					w.violation(fmt.Sprintf("capture %s (key %s) answered 200 without capturing: %s", ex.path, ex.key, a.body))
					break
				}
			}
		}
		for _, a := range ex.answers {
			if (answer{body: a.body}).str("code") == "idempotency_key_reuse" {
				// Terminals here only ever repeat the very same request.
				w.violation(fmt.Sprintf("idempotency: %s %s (key %s), repeated as it was, refused as a reused key",
					ex.method, ex.path, ex.key))
				break
			}
		}
		var first *heard
		for i := range ex.answers {
			a := &ex.answers[i]
			if !definitive(*a) {
				continue
			}
			if first == nil {
				first = a
				continue
			}
			switch {
			case a.at.Sub(ex.first) < 72*time.Hour:
				if a.status != first.status || !bytes.Equal(a.body, first.body) {
					w.violation(fmt.Sprintf("idempotency: %s %s (key %s) answered %d %s, then %d %s",
						ex.method, ex.path, ex.key, first.status, clip(first.body), a.status, clip(a.body)))
				}
			case first.status < 300 && (a.status != first.status || (answer{body: a.body}).str("id") != (answer{body: first.body}).str("id")):
				w.violation(fmt.Sprintf("idempotency: %s %s (key %s) made %s, and after 72 hours %d %s",
					ex.method, ex.path, ex.key, (answer{body: first.body}).str("id"), a.status, clip(a.body)))
			}
		}
	}
	return w.violations
}

// definitive says whether an answer stands for its request: not a 5xx,
// not "still running", not a refusal about the key.
func definitive(a heard) bool {
	code := (answer{body: a.body}).str("code")
	switch {
	case a.status >= 500:
		return false
	case a.status == http.StatusConflict && (code == "idempotency_key_in_use" || code == "payment_in_progress"):
		return false
	case code == "idempotency_key_reuse":
		return false
	}
	return true
}

func clip(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}
