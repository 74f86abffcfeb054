package gameday

import (
	"fmt"
	"io"
	"sort"
	"strings"
)

// WriteText prints the game day's report: the run, the incidents as they
// happened, the queue, the ledger check, then the SLO report.
func (r Report) WriteText(w io.Writer) error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("game day %q: %s .. %s (%.1fs real), %d customers, %d requests (%d repeats after a lost answer), %d restarts",
		r.Plan, r.Started.Format("15:04:05"), r.Ended.Format("15:04:05"), r.Ended.Sub(r.Started).Seconds(),
		r.Customers, r.Requests, r.Repeats, r.Restarts)
	p("asked:    %s", counts(r.Actions))
	p("answered: %s", counts(r.Outcomes))
	p("payments: %s", counts(r.ByStatus))
	for _, in := range r.Incidents {
		line := fmt.Sprintf("incident %s %s%s for %s (plan time)", in.At, in.Kind, prefix(" ", in.Bank), in.For.Duration)
		if in.FailoverSeconds >= 0 {
			line += fmt.Sprintf(": failed over in %.2fs", in.FailoverSeconds)
		}
		if in.BackSeconds >= 0 {
			line += fmt.Sprintf(", back in %.2fs after the fault was lifted", in.BackSeconds)
		}
		if in.Error != "" {
			line += " ERROR " + in.Error
		}
		p("%s", line)
	}
	drain := "not drained"
	if r.DrainSeconds >= 0 {
		drain = fmt.Sprintf("drained %.2fs after the last fault was lifted", r.DrainSeconds)
	}
	p("queue: peak %d, %s, %d left", r.QueuePeak, drain, r.QueueLeft)
	l := r.Ledger
	p("ledger: %d card payments, %d charged once; double charged %d, lost %d, unexpected %d, unresolved %d — %s",
		l.CardPayments, l.Charged, len(l.DoubleCharge), len(l.Lost), len(l.Unexpected), len(l.Unresolved), verdict(r.LedgerHeld))
	for _, list := range []struct {
		name string
		ids  []string
	}{{"double charged", l.DoubleCharge}, {"lost", l.Lost}, {"unexpected", l.Unexpected}, {"unresolved", l.Unresolved}} {
		if len(list.ids) > 0 {
			p("  %s: %s", list.name, strings.Join(first(list.ids, 10), ", "))
		}
	}
	for _, f := range r.Failures {
		p("failure: %s", f)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if err := r.SLO.WriteText(w); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "game day: objectives %s, ledger %s: %s\n", verdict(r.ObjectivesHeld), verdict(r.LedgerHeld), map[bool]string{true: "PASSED", false: "FAILED"}[r.Passed])
	return err
}

func verdict(ok bool) string {
	if ok {
		return "held"
	}
	return "MISSED"
}

func prefix(p, s string) string {
	if s == "" {
		return ""
	}
	return p + s
}

func first(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("... %d more", len(s)-n))
	}
	return s
}

func counts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}
