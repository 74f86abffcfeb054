package reconcile_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"testing"

	"storepay/reconcile"
)

// Every fixture night's three outputs (the JSON report, the CSV of
// discrepancies, the summary a manager reads) are pinned by golden files
// under testdata/<case>/. Refresh them with: go test ./reconcile -update
func TestGoldenReports(t *testing.T) {
	for _, name := range []string{"clean", "categories", "warts", "neighbour"} {
		t.Run(name, func(t *testing.T) {
			db, f, dir := loadFixture(t, name)
			for i, date := range f.Runs {
				res := run(t, db, date, f.sources(t, dir, date))
				base := filepath.Join("testdata", name, fmt.Sprintf("%d-%s", i+1, date))

				var js, csv, txt bytes.Buffer
				if err := res.WriteJSON(&js); err != nil {
					t.Fatal(err)
				}
				if err := res.WriteCSV(&csv); err != nil {
					t.Fatal(err)
				}
				if err := res.WriteSummary(&txt); err != nil {
					t.Fatal(err)
				}
				golden(t, base+".json", js.Bytes())
				golden(t, base+".csv", csv.Bytes())
				golden(t, base+".txt", txt.Bytes())

				// What the API serves later is what the batch wrote.
				last, err := reconcile.Last(context.Background(), db, date)
				if err != nil {
					t.Fatal(err)
				}
				if got, want := canonical(t, last), canonical(t, res.Report()); got != want {
					t.Errorf("Last(%s) differs from the run's report:\n%s", date, diff(want, got))
				}
				var fromFile reconcile.Report
				if err := json.Unmarshal(js.Bytes(), &fromFile); err != nil {
					t.Fatalf("the JSON report does not decode: %v", err)
				}
				if got, want := canonical(t, fromFile), canonical(t, last); got != want {
					t.Errorf("JSON report file differs from Last(%s):\n%s", date, diff(want, got))
				}
			}
		})
	}
}

// canonical is a report as indented JSON, for comparisons that show a diff.
func canonical(t *testing.T, r reconcile.Report) string {
	t.Helper()
	b, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
