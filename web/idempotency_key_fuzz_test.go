package web

import (
	"strings"
	"testing"
)

// FuzzParseIdempotencyKey holds parseIdempotencyKey to the IETF draft's
// two spellings of one key (bare, or an RFC 8941 sf-string) and to the
// contract's bounds, for any header value:
//
//   - a key it accepts is 1 to 255 printable ASCII characters;
//   - an accepted bare value is the key itself (less the spaces around
//     it); an accepted sf-string is the key's one quoted spelling;
//   - every such key, quoted, reads back as itself, and so does it bare
//     when it can be written bare; the input taken as a key obeys the
//     same round trip, and one out of bounds is refused in either form.
func FuzzParseIdempotencyKey(f *testing.F) {
	for _, s := range []string{
		"8e03978e-40d5-43e8-bc93-6894a57f9324", `"8e03978e-40d5-43e8-bc93-6894a57f9324"`,
		"order-1", `  "pay-2"  `, `"a\"b"`, `"a\\b"`, `"a\x"`, `"`, `""`, `"a"b"`, "with space",
		" lead", "tail ", "\tpay-3\t", "café", "tab\there", "\x00", "\x7f",
		strings.Repeat("k", 255), strings.Repeat("k", 256), `"` + strings.Repeat("k", 255) + `"`,
		`"` + strings.Repeat(`\"`, 128) + `"`, `"unterminated`, `unopened"`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		key, ok := parseIdempotencyKey(in)
		trimmed := strings.TrimSpace(in)
		if !ok {
			if key != "" {
				t.Fatalf("parseIdempotencyKey(%q) refused it but returned %q", in, key)
			}
		} else {
			if !validKeyText(key) {
				t.Fatalf("parseIdempotencyKey(%q) = %q: not 1 to 255 printable ASCII characters", in, key)
			}
			if quoted := strings.HasPrefix(trimmed, `"`); !quoted && key != trimmed {
				t.Fatalf("bare %q read as %q", in, key)
			} else if quoted && sfString(key) != trimmed {
				t.Fatalf("sf-string %q read as %q, whose one quoted spelling is %s", in, key, sfString(key))
			}
			roundTrip(t, key)
		}
		// The input as a key a terminal might make: if it is one, both
		// spellings carry it; if not, neither does.
		if validKeyText(in) {
			roundTrip(t, in)
		} else if got, ok := parseIdempotencyKey(sfString(in)); ok {
			t.Fatalf("%q is no key, but its sf-string %s was read as %q", in, sfString(in), got)
		}
	})
}

// roundTrip checks that the key reads back from its quoted spelling and,
// when it can be written bare, from its bare one.
func roundTrip(t *testing.T, key string) {
	t.Helper()
	if got, ok := parseIdempotencyKey(sfString(key)); !ok || got != key {
		t.Fatalf("key %q quoted as %s reads back as %q, %v", key, sfString(key), got, ok)
	}
	if bare := !strings.HasPrefix(key, `"`) && strings.TrimSpace(key) == key; bare {
		if got, ok := parseIdempotencyKey(key); !ok || got != key {
			t.Fatalf("key %q sent bare reads back as %q, %v", key, got, ok)
		}
	}
}

// validKeyText is the contract's key: 1 to 255 printable ASCII characters.
func validKeyText(s string) bool {
	if len(s) < 1 || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// sfString is s as an RFC 8941 sf-string: quoted, with '"' and '\'
// escaped by a backslash.
func sfString(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}
