package slo

import (
	"fmt"
	"io"
	"sort"
	"time"
)

// WriteText writes the report for a person: the objectives first, then
// the figures behind them, then the incidents.
func (r Report) WriteText(w io.Writer) error {
	held := func(b bool) string {
		if b {
			return "held"
		}
		return "MISSED"
	}
	p := r.Payments
	lines := []string{
		fmt.Sprintf("SLO report %s .. %s", r.From.Format(time.RFC3339), r.To.Format(time.RFC3339)),
		fmt.Sprintf("store availability    %s  (objective %s, down %s of %s)  %s", pct(r.Store.Availability), pct(r.Store.Objective),
			secs(r.Store.DownSeconds), secs(r.Store.WindowSeconds), held(r.Store.Held)),
		fmt.Sprintf("payment availability  %s  (objective %s, %d of %d card payments decided within %s)  %s", pct(p.Availability), pct(p.Objective),
			p.DecidedInTime, p.Card, secs(p.BudgetSeconds), held(p.Held)),
		fmt.Sprintf("  late %d, undecided %d, longest decision %s, cash %d", p.Late, p.Undecided, secs(p.MaxWaitSeconds), p.Cash),
		fmt.Sprintf("decided online        %s  (%d)", pct(p.OnlineShare), p.Online),
		fmt.Sprintf("decided offline       %s  (%d)", pct(p.OfflineShare), p.Offline),
		fmt.Sprintf("offline-only time     %s", secs(r.OfflineOnlySeconds)),
		fmt.Sprintf("error budget          %d spent of %.3f allowed, %s left, burn rate %.2f", r.Budget.Spent, r.Budget.Allowed, pct(r.Budget.Left), r.Budget.BurnRate),
	}
	if len(p.ByStatus) > 0 {
		keys := make([]string, 0, len(p.ByStatus))
		for k := range p.ByStatus {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		s := "card payments by status:"
		for _, k := range keys {
			s += fmt.Sprintf(" %s %d", k, p.ByStatus[k])
		}
		lines = append(lines, s)
	}
	lines = append(lines, fmt.Sprintf("incidents             %d", len(r.Incidents)))
	for _, in := range r.Incidents {
		what := in.Kind
		if in.Bank != "" {
			what += " " + in.Bank
		}
		if in.State != "" {
			what += " " + in.State
		}
		end := in.End.Format(time.RFC3339)
		if in.Ongoing {
			end = "ongoing"
		}
		lines = append(lines, fmt.Sprintf("  %-28s %s .. %s (%s): %d card payments, %d online, %d offline, %d late or undecided",
			what, in.Start.Format(time.RFC3339), end, secs(in.Seconds), in.Effect.Card, in.Effect.Online, in.Effect.Offline, in.Effect.Bad))
	}
	verdict := "all objectives held"
	if !r.Held {
		verdict = "an objective was missed"
	}
	lines = append(lines, verdict)
	for _, l := range lines {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return err
		}
	}
	return nil
}

func pct(f float64) string { return fmt.Sprintf("%.4f%%", f*100) }

func secs(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(time.Millisecond).String()
}
