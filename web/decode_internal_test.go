package web

import (
	"net/http/httptest"
	"strings"
	"testing"
)

// A value of the wrong type is named by its full path, array index
// included, and an integer too large for its field is "out of range".
func TestDecodeNamesTheIndexAndSaysOutOfRange(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
	}{
		{"OutOfRange", `{"channel":"walk_in","lines":[{"sku":"A","quantity":1,"unit_amount":1},{"sku":"B","quantity":99999999999999999999,"unit_amount":1}]}`, "lines[1].quantity is out of range"},
		{"Fraction", `{"lines":[{"quantity":1.5}]}`, "lines[0].quantity must be an integer"},
		{"String", `{"currency":"USD","lines":[{"sku":"A","description":"x","quantity":1},{"unit_amount":"9"}]}`, "lines[1].unit_amount must be an integer"},
		{"ObjectForString", `{"lines":[{"sku":"A"},{"description":{"x":[1,2]}}]}`, "lines[1].description must be a string"},
		{"TopLevel", `{"channel":5}`, "channel must be a string"},
		{"NegativeHuge", `{"lines":[{"unit_amount":-99999999999999999999}]}`, "lines[0].unit_amount is out of range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var req orderRequest
			err := decode(nil, httptest.NewRequest("POST", "/v1/orders", strings.NewReader(tc.body)), &req)
			p, ok := err.(*Problem)
			if !ok || p.Status != 400 || p.Detail != tc.want {
				t.Fatalf("got %v; want 400 %q", err, tc.want)
			}
		})
	}
}
