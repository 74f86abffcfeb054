package web

import (
	"strings"
	"testing"
)

func TestParseIdempotencyKey(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"abc-123", "abc-123", true},
		{`"abc-123"`, "abc-123", true},
		{`  "abc-123"  `, "abc-123", true},
		{`"a\"b"`, `a"b`, true},
		{`"a\\b"`, `a\b`, true},
		{"with space", "with space", true},
		{strings.Repeat("k", 255), strings.Repeat("k", 255), true},
		{strings.Repeat("k", 256), "", false},
		{"", "", false},
		{`""`, "", false},
		{`"unterminated`, "", false},
		{`"a"b"`, "", false},
		{`"a\x"`, "", false},
		{"café", "", false},
		{"tab\there", "", false},
	} {
		got, ok := parseIdempotencyKey(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseIdempotencyKey(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
