package orders

import (
	"context"
	"database/sql"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"storepay/migrations"
)

// The machine's table in docs/payment-machine.md is the code's table, row
// for row and in the same order: a change to one without the other fails.
func TestMachineTableMatchesTheDocs(t *testing.T) {
	raw, err := os.ReadFile("../docs/payment-machine.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, ok := strings.Cut(string(raw), "## The table")
	if !ok {
		t.Fatal(`docs/payment-machine.md has no "## The table" section`)
	}
	var doc []string
	for _, line := range strings.Split(table, "\n") {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		if len(cells) != 3 {
			continue
		}
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if cells[0] == "from" || strings.HasPrefix(cells[0], "---") {
			continue
		}
		doc = append(doc, strings.Join(cells, " | "))
	}
	var code []string
	for _, tr := range Machine {
		code = append(code, tr.From.String()+" | "+string(tr.Event)+" | "+tr.To.String())
	}
	for i := 0; i < max(len(doc), len(code)); i++ {
		var d, c string
		if i < len(doc) {
			d = doc[i]
		}
		if i < len(code) {
			c = code[i]
		}
		if d != c {
			t.Fatalf("row %d: docs say %q, code says %q", i+1, d, c)
		}
	}
}

// The table is a function: one target per (state, event).
func TestMachineIsDeterministic(t *testing.T) {
	seen := map[string]State{}
	for _, tr := range Machine {
		k := tr.From.String() + " on " + string(tr.Event)
		if to, dup := seen[k]; dup {
			t.Errorf("%s leads to both %s and %s", k, to, tr.To)
		}
		seen[k] = tr.To
	}
}

// Every operation is left only by a bank's answer: no event from a state
// with an operation to a state without one is a request or a timer, except
// the authorization's own offline decision and the never-sent timer.
func TestOperationsEndOnlyByAnAnswer(t *testing.T) {
	ending := map[Event]bool{EvApprovedSale: true, EvApprovedPreauth: true, EvDeclined: true, EvStoredOffline: true,
		EvDeclinedOffline: true, EvNeverSent: true, EvCaptured: true, EvVoided: true, EvRefundedPart: true,
		EvRefundedInFull: true, EvOpFailed: true, EvUndone: true, EvUndoRefused: true}
	for _, tr := range Machine {
		if tr.From.Op != OpNone && tr.To.Op == OpNone && !ending[tr.Event] {
			t.Errorf("%s leaves %s on %s, which is no bank's answer", tr.From, tr.From.Op, tr.Event)
		}
		// A cancel's operations end only with the money back.
		if (tr.From.Op == OpCancelVoid || tr.From.Op == OpCancelRefund) && tr.To.Op == OpNone &&
			tr.To.Status != Voided && tr.To.Status != Refunded {
			t.Errorf("a cancel's %s ends at %s: the bank keeps money for a cancelled order", tr.From.Op, tr.To)
		}
	}
}

// transition refuses a move the table does not have, and writes nothing.
func TestTransitionRefusesIllegalMoves(t *testing.T) {
	db, err := migrations.Open(context.Background(), filepath.Join(t.TempDir(), "s.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	s := &Service{DB: db}
	now := time.Now()
	p := Payment{ID: "pay_1", OrderID: "ord_1", Method: Card, Mode: ModeOnline, Amount: 100,
		Currency: "USD", TerminalID: "lane-1", CreatedAt: now, UpdatedAt: now}
	err = db.Update(context.Background(), func(tx *sql.Tx) error {
		if err := insertOrder(tx, Order{ID: "ord_1", Status: OrderOpen, Channel: WalkIn, Currency: "USD",
			Lines: []Line{{SKU: "A", Quantity: 1, UnitAmount: 100}}, TotalAmount: 100, CreatedAt: now, UpdatedAt: now}, "", ""); err != nil {
			return err
		}
		return s.transition(tx, &p, move{ev: EvDeclinedOffline}, now)
	})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(context.Background(), func(tx *sql.Tx) error {
		return s.transition(tx, &p, move{ev: EvApprovedSale}, now)
	})
	if err == nil || !strings.Contains(err.Error(), "illegal transition") {
		t.Fatalf("declined → captured moved: %v", err)
	}
	var status string
	var events int
	db.Read().QueryRow(`SELECT status FROM payments WHERE id = 'pay_1'`).Scan(&status)
	db.Read().QueryRow(`SELECT count(*) FROM payment_events WHERE payment_id = 'pay_1'`).Scan(&events)
	if status != "declined" || events != 1 {
		t.Fatalf("the refused move left the payment %s with %d events, want declined and 1", status, events)
	}
	// An event that starts an operation needs its key.
	q := Payment{ID: "pay_2", OrderID: "ord_1", Method: Card, Mode: ModeOnline, Amount: 100,
		Currency: "USD", TerminalID: "lane-1", CreatedAt: now, UpdatedAt: now}
	err = db.Update(context.Background(), func(tx *sql.Tx) error {
		return s.transition(tx, &q, move{ev: EvCardWritten}, now)
	})
	if err == nil {
		t.Fatal("an authorization was written ahead without its key")
	}
}

// No code but transition assigns a payment's status or operation: every
// change goes through the machine. (Orders' own status, on variables
// named o, is the order's, not a payment's.)
func TestOnlyTransitionAssignsState(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || name == "transition.go" {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			as, ok := n.(*ast.AssignStmt)
			if !ok {
				return true
			}
			for _, lhs := range as.Lhs {
				sel, ok := lhs.(*ast.SelectorExpr)
				if !ok || (sel.Sel.Name != "Status" && sel.Sel.Name != "PendingOp") {
					continue
				}
				if id, ok := sel.X.(*ast.Ident); ok && id.Name == "o" && sel.Sel.Name == "Status" {
					continue
				}
				t.Errorf("%s assigns %s outside transition", fset.Position(as.Pos()), sel.Sel.Name)
			}
			return true
		})
	}
}
